"""Probe files on disk: ``.npz`` and ``.npy`` read safely (no pickles), memory-mapped where they can be.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mlflow_xai.errors import ProbeError

# What numpy and zipfile raise on a file that is not what its name says: text, truncated, damaged.
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip
#: The arrays ``probe_set.load_npz`` looks for, as its refusals name them.
NPZ_ARRAYS = (
    "numeric arrays named 'inputs' (or 'x' or 'images') and optional 'labels' (or 'y'), 'masks', "
    "'ids' and 'feature_names' (these two may be strings); or, for text, 'input_ids' and optional "
    "'attention_mask', 'labels', 'ids' and 'tokens'"
)


def unreadable(path: Path, why: str, arrays: str = NPZ_ARRAYS) -> ProbeError:
    """The one refusal of a probe file numpy cannot read as numbers, with what is allowed instead.

    numpy's own messages are never passed on: for a text or damaged file they advise loading it
    "unsafely", which would run whatever code the file holds.
    """
    if path.suffix == ".npy":
        allowed = "a probe .npy file is one numeric array of inputs (N, ...), as numpy.save writes it"
    else:
        allowed = f"a probe .npz file is written by numpy.savez (or numpy.savez_compressed) with {arrays}"
    return ProbeError(f"probe file {str(path)!r} is not a readable {path.suffix} file ({why}); {allowed}")


@contextmanager
def open_npz(path: Path, arrays: str = NPZ_ARRAYS) -> Iterator[Any]:
    """An open ``.npz`` archive (numpy's ``NpzFile``), closed on exit; anything else is refused."""
    with open(path, "rb") as fh:
        head = fh.read(len(np.lib.format.MAGIC_PREFIX))
    if head == np.lib.format.MAGIC_PREFIX:
        raise unreadable(path, "it is one .npy array, not an archive of them: name it .npy", arrays)
    if not head.startswith(_ZIP_MAGIC):
        raise unreadable(path, "it is not a zip archive of .npy arrays", arrays)
    try:
        data = np.load(path, allow_pickle=False)
    except _UNREADABLE:
        raise unreadable(path, "it is truncated or damaged", arrays) from None
    try:
        yield data
    finally:
        data.close()


def read_npy(path: Path, *, mmap: bool = True) -> np.ndarray:
    """A numeric ``.npy`` array (memory-mapped with ``mmap``); Python objects are never loaded."""
    with open(path, "rb") as fh:
        if fh.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
            raise unreadable(path, "it is not a .npy array")
        fh.seek(0)
        objects = _holds_objects(fh)
    if objects:
        raise unreadable(path, "it holds Python objects: it is not a plain numeric .npy array")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except _UNREADABLE:
        raise unreadable(path, "it is truncated or damaged") from None


def npz_member(data: Any, name: str, path: Path, arrays: str = NPZ_ARRAYS) -> np.ndarray:
    """One array of an open ``.npz``; an array of Python objects is refused, never loaded."""
    member = name if name in data.zip.namelist() else f"{name}.npy"  # numpy's own lookup
    try:
        with data.zip.open(member) as fh:
            objects = _holds_objects(fh)
        value = None if objects else data[name]
    except _UNREADABLE:
        objects, value = False, None
    if objects:
        raise unreadable(path, f"array {name!r} holds Python objects, not numbers", arrays)
    if not isinstance(value, np.ndarray):  # numpy hands back the raw bytes of a member that is not .npy
        raise unreadable(path, f"array {name!r} is truncated, damaged or not a .npy array", arrays)
    return value


def _holds_objects(fh: Any) -> bool:
    """Whether a ``.npy`` stream's header declares Python objects; only the header is read."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(fh)
        else:
            header = np.lib.format.read_array_header_2_0(fh)
    except _UNREADABLE:
        return False  # not a readable header: loading it says so
    return bool(header[2].hasobject)
