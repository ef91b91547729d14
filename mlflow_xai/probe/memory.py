"""Keeping a probe set's memory bounded: pages of mapped files released after use, and spill files
that stream samples to disk.
"""

from __future__ import annotations

import mmap
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mlflow_xai.errors import ProbeError

CHUNK_ROWS = 1024  # samples read at once by validation, hashing and copying

# --------------------------------------------------------------------------------------------------
# Arrays that may live on disk


def _chunks(array: np.ndarray, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    for start in range(0, len(array), rows):
        yield array[start : start + rows]


def release_pages(array: np.ndarray | None) -> None:
    """Drop the pages of a memory-mapped array from this process's resident set.

    The data stays in the operating system's page cache (or in the file, for written pages of a
    shared mapping), so a later read costs a page fault, not a disk read. Without this, reading a
    mapped file through once keeps all of it resident and memory grows with the probe set.
    """
    mm = getattr(array, "_mmap", None)  # numpy's memmap (and its views) keep their mmap here
    if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        mm.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # closed or not supported: the pages simply stay resident
        pass


def keep_alive(owner: object, array: np.ndarray | None) -> None:
    """Delete ``array``'s spill directory once ``owner`` (and the array) are gone."""
    directory = getattr(array, "spill_dir", None) if array is not None else None
    if directory is not None:
        weakref.finalize(owner, shutil.rmtree, directory, ignore_errors=True)


class SpillArray(np.memmap):
    """A memory-mapped array in a temporary directory that a ``keep_alive`` owner cleans up."""

    spill_dir: Path | None = None


class SpillWriter:
    """Append rows of one shape and dtype to a file on disk, then map them as one array.

    Memory stays at one chunk whatever the number of rows, and the number need not be known in
    advance (an iterable Dataset has no length).
    """

    def __init__(self, name: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mlflow-xai-probe-"))
        self.path = self.dir / f"{name}.bin"
        self._file = self.path.open("wb")
        self.rows = 0
        self.row_shape: tuple[int, ...] | None = None
        self.dtype: np.dtype | None = None

    def append(self, rows: np.ndarray, what: str = "sample") -> None:
        rows = np.ascontiguousarray(rows)
        if self.row_shape is None:
            self.row_shape, self.dtype = tuple(rows.shape[1:]), rows.dtype
        elif tuple(rows.shape[1:]) != self.row_shape or rows.dtype != self.dtype:
            raise ProbeError(
                f"every probe {what} must have the same shape and dtype: sample {self.rows} has "
                f"{list(rows.shape[1:])} of {rows.dtype}, the first had {list(self.row_shape)} of "
                f"{self.dtype}; resize images to one size (probe: {{preprocess: {{resize: ..., "
                "center_crop: ...}})"
            )
        self._file.write(rows.tobytes())
        self.rows += len(rows)

    def finish(self) -> SpillArray | None:
        self._file.close()
        if self.rows == 0:
            self.discard()
            return None
        array = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.rows, *self.row_shape))
        array = array.view(SpillArray)
        array.spill_dir = self.dir
        return array

    def discard(self) -> None:
        self._file.close()
        shutil.rmtree(self.dir, ignore_errors=True)
