"""The probe set: the held-out inputs an audit explains, with stable ids and a content hash."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlflow_xai.errors import ProbeError


@dataclass(frozen=True)
class ProbeBatch:
    start: int  # position of the first sample in the probe set
    inputs: np.ndarray  # (B, *input_shape), floating point
    labels: np.ndarray | None  # (B,) int64
    ids: np.ndarray  # (B,) str


@dataclass(frozen=True)
class ProbeSet:
    """Inputs in the model's input space, optional labels and ground-truth masks, stable ids."""

    inputs: np.ndarray
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        x = self.inputs
        if not isinstance(x, np.ndarray):
            raise ProbeError(f"probe inputs must be a numpy array, got {type(x).__name__}")
        if x.ndim < 2:
            raise ProbeError(
                f"probe inputs must have a batch axis and at least one feature axis, got shape {x.shape}"
            )
        if len(x) == 0:
            raise ProbeError("the probe set is empty: it needs at least one sample")
        if not np.issubdtype(x.dtype, np.floating):
            raise ProbeError(
                f"probe inputs must be floating point in the model's input space, got {x.dtype}; "
                "scale integer images to floats (e.g. uint8 / 255) before auditing"
            )
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
            raise ProbeError(f"probe inputs contain NaN or Inf in {bad} sample(s); all values must be finite")
        n = len(x)
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
                raise ProbeError(
                    f"probe labels must be {n} integers (one per sample), got shape {labels.shape} "
                    f"of {labels.dtype}"
                )
            object.__setattr__(self, "labels", labels.astype(np.int64))
        if self.masks is not None:
            masks = np.asarray(self.masks)
            if len(masks) != n or masks.shape[1:] != x.shape[-masks.ndim + 1 :]:
                raise ProbeError(
                    f"probe masks must have shape ({n}, ...) matching the trailing axes of the inputs "
                    f"{x.shape}, got {masks.shape}"
                )
            object.__setattr__(self, "masks", masks.astype(bool))
        if self.ids is None:
            object.__setattr__(self, "ids", np.array([f"{i:06d}" for i in range(n)]))
        else:
            ids = np.asarray(self.ids).astype(str)
            if ids.shape != (n,):
                raise ProbeError(f"probe ids must be {n} strings (one per sample), got shape {ids.shape}")
            if len(set(ids.tolist())) != n:
                raise ProbeError("probe ids must be unique")
            object.__setattr__(self, "ids", ids)

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs.shape[1:])

    def batches(self, batch_size: int) -> Iterator[ProbeBatch]:
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            yield ProbeBatch(
                start=start,
                inputs=np.ascontiguousarray(self.inputs[start:stop]),
                labels=None if self.labels is None else self.labels[start:stop],
                ids=self.ids[start:stop],
            )

    def head(self, n: int) -> ProbeSet:
        """The first ``n`` samples (``max_samples``)."""
        if n >= len(self):
            return self
        return ProbeSet(
            self.inputs[:n],
            None if self.labels is None else self.labels[:n],
            None if self.masks is None else self.masks[:n],
            self.ids[:n],
        )

    def sha256(self) -> str:
        """A hash of every value in the probe set (MLflow's own digest samples only the first rows)."""
        digest = hashlib.sha256()
        for name, array in (("inputs", self.inputs), ("labels", self.labels), ("ids", self.ids)):
            if array is None:
                continue
            array = np.ascontiguousarray(array)
            digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
            if array.dtype.kind == "U":
                digest.update("\x00".join(array.tolist()).encode())
            else:
                # Hash in slices so that a memory-mapped probe set is never read whole into memory.
                for chunk in np.array_split(array.reshape(len(array), -1), max(1, len(array) // 1024)):
                    digest.update(np.ascontiguousarray(chunk).tobytes())
        return digest.hexdigest()

    @classmethod
    def from_npz(cls, path: str | Path) -> ProbeSet:
        """Load ``inputs`` (or ``x``/``images``), and optional ``labels``/``y``, ``masks``, ``ids``."""
        path = Path(path)
        if not path.is_file():
            raise ProbeError(f"probe file {str(path)!r} does not exist")
        if path.suffix == ".npy":
            return cls(np.load(path, allow_pickle=False))
        if path.suffix != ".npz":
            raise ProbeError(f"probe file {str(path)!r} must be .npz or .npy")
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)

            def pick(*names: str) -> np.ndarray | None:
                for name in names:
                    if name in keys:
                        return data[name]
                return None

            inputs = pick("inputs", "x", "images")
            if inputs is None:
                raise ProbeError(
                    f"probe file {str(path)!r} has arrays {sorted(keys)}; it needs one named "
                    "'inputs' (or 'x' or 'images'), with optional 'labels', 'masks' and 'ids'"
                )
            return cls(inputs, pick("labels", "y"), pick("masks"), pick("ids"))
