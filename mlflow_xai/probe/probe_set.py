"""The probe set: the held-out inputs an audit explains, with stable ids and a content hash.

A probe set may be larger than memory. Its arrays may be memory-mapped (a ``.npy`` file, or the spill
file a loader streams a Dataset into), so everything here reads them in row chunks: validation,
hashing and sampling never hold more than ``CHUNK_ROWS`` samples at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlflow_xai.errors import ProbeError
from mlflow_xai.probe.files import npz_member, open_npz, read_npy
from mlflow_xai.probe.memory import CHUNK_ROWS, SpillWriter, _chunks, keep_alive, release_pages

SAMPLINGS = ("first", "random", "stratified")
#: Where a probe's labels came from, when not with the data itself (``ProbeSet.label_source``).
FOLDER_ORDER = "folder_order"  # an image folder's sorted folder positions: not known to be the model's
CLASS_INDEX = "class_index"  # an image folder's folders through probe.class_index: the model's classes
LABEL_SOURCES = (FOLDER_ORDER, CLASS_INDEX)


@dataclass(frozen=True)
class ProbeBatch:
    start: int  # position of the first sample in the probe set
    inputs: np.ndarray  # (B, *input_shape), floating point
    labels: np.ndarray | None  # (B,) int64
    ids: np.ndarray  # (B,) str


@dataclass(frozen=True)
class ProbeSet:
    """Inputs in the model's input space, optional labels and ground-truth masks, stable ids.

    ``feature_names`` names the columns of tabular inputs of shape (N, F).

    ``class_names`` maps a label to the name of its class (an image folder's folder name), for
    titles and tables. ``label_source`` says where the labels came from when they were not given
    with the data: ``"folder_order"`` for an image folder read without ``probe.class_index``, whose
    labels are the folders' positions in sorted order (as torchvision's ``ImageFolder``) and so the
    model's classes only if it was trained on that very layout; ``"class_index"`` when
    ``probe.class_index`` mapped each folder to the model's class. ``None`` (arrays, files,
    Datasets) means the labels are taken as the model's class indices, as given. Neither enters
    ``sha256``: the labels themselves do.
    """

    inputs: np.ndarray
    labels: np.ndarray | None = None
    masks: np.ndarray | None = None
    ids: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None
    class_names: dict[int, str] | None = None
    label_source: str | None = None
    # Text probes: ``inputs`` are token ids (N, L), int64; which positions are real tokens (1) or
    # padding (0), and the tokens as text for the report (optional).
    attention_mask: np.ndarray | None = None
    tokens: np.ndarray | None = None
    # The tokenizer's pad/mask/unk ids and special token ids (a probe tokenized here), or None.
    token_ids: dict | None = None
    # Text probes of models with segments (BERT's sentence A/B): one segment id per token.
    token_type_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.is_text:
            self._check_text()
        else:
            self._check_inputs()
        n = len(self.inputs)
        self._check_labels(n)
        self._check_masks(n)
        self._check_ids(n)
        self._check_feature_names()
        self._check_classes()

    def _check_inputs(self) -> None:
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
                "scale integer images to floats (e.g. uint8 / 255) before auditing, or declare "
                "the scale in the config (probe: {preprocess: {scale: 255}})"
            )
        bad = sum(
            int((~np.isfinite(chunk)).reshape(len(chunk), -1).any(axis=1).sum()) for chunk in _chunks(x)
        )
        release_pages(x)
        if bad:
            raise ProbeError(f"probe inputs contain NaN or Inf in {bad} sample(s); all values must be finite")

    @property
    def is_text(self) -> bool:
        """Token ids: integer inputs of shape (N, L), or any probe given an attention mask."""
        x = self.inputs
        return self.attention_mask is not None or (
            isinstance(x, np.ndarray) and x.ndim == 2 and np.issubdtype(x.dtype, np.integer)
        )

    def _check_text(self) -> None:
        x = self.inputs
        if not isinstance(x, np.ndarray) or x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
            shape = getattr(x, "shape", None)
            raise ProbeError(
                f"a text probe's input_ids must be integer token ids of shape (N, L), got {shape} of "
                f"{getattr(x, 'dtype', type(x).__name__)}"
            )
        if len(x) == 0:
            raise ProbeError("the probe set is empty: it needs at least one sample")
        if int(x.min()) < 0:
            raise ProbeError(f"token ids must be >= 0, found {int(x.min())}")
        object.__setattr__(self, "inputs", x.astype(np.int64, copy=False))
        mask = np.ones_like(x) if self.attention_mask is None else np.asarray(self.attention_mask)
        if mask.shape != x.shape or not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool):
            raise ProbeError(
                f"attention_mask must be 0/1 integers of the input_ids' shape {x.shape}, got {mask.shape} "
                f"of {mask.dtype}"
            )
        if not np.isin(mask, (0, 1)).all():
            raise ProbeError("attention_mask must hold 0 (padding) and 1 (a token) only")
        if not mask.any(axis=1).all():
            raise ProbeError("every text sample needs at least one token with attention_mask 1")
        object.__setattr__(self, "attention_mask", mask.astype(np.int64))
        if self.token_type_ids is not None:
            types = np.asarray(self.token_type_ids)
            if types.shape != x.shape or not np.issubdtype(types.dtype, np.integer) or int(types.min()) < 0:
                raise ProbeError(
                    f"token_type_ids must be integers >= 0 of the input_ids' shape {x.shape}, got "
                    f"{types.shape} of {types.dtype}"
                )
            object.__setattr__(self, "token_type_ids", types.astype(np.int64))
        if self.tokens is not None:
            tokens = np.asarray(self.tokens).astype(str)
            if tokens.shape != x.shape:
                raise ProbeError(
                    f"tokens must be one string per token id, shape {x.shape}, got {tokens.shape}"
                )
            object.__setattr__(self, "tokens", tokens)

    def _check_labels(self, n: int) -> None:
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
                raise ProbeError(
                    f"probe labels must be {n} integers (one per sample), got shape {labels.shape} "
                    f"of {labels.dtype}"
                )
            object.__setattr__(self, "labels", labels.astype(np.int64))

    def _check_masks(self, n: int) -> None:
        x = self.inputs
        if self.masks is not None:
            masks = self.masks if isinstance(self.masks, np.ndarray) else np.asarray(self.masks)
            if masks.ndim < 2 or len(masks) != n or masks.shape[1:] != x.shape[-masks.ndim + 1 :]:
                raise ProbeError(
                    f"probe masks must have shape ({n}, ...) matching the trailing axes of the inputs "
                    f"{x.shape}, got {masks.shape}"
                )
            if masks.dtype != bool:
                if not (np.issubdtype(masks.dtype, np.integer) or masks.dtype == bool):
                    raise ProbeError(f"probe masks must be boolean or 0/1 integers, got {masks.dtype}")
                masks = masks.astype(bool)
            object.__setattr__(self, "masks", masks)

    def _check_ids(self, n: int) -> None:
        if self.ids is None:
            object.__setattr__(self, "ids", np.array([f"{i:06d}" for i in range(n)]))
        else:
            ids = np.asarray(self.ids).astype(str)
            if ids.shape != (n,):
                raise ProbeError(f"probe ids must be {n} strings (one per sample), got shape {ids.shape}")
            if len(set(ids.tolist())) != n:
                raise ProbeError("probe ids must be unique")
            object.__setattr__(self, "ids", ids)

    def _check_feature_names(self) -> None:
        x = self.inputs
        if self.feature_names is not None:
            names = tuple(str(name) for name in self.feature_names)
            if x.ndim != 2 or len(names) != x.shape[1]:
                raise ProbeError(
                    f"feature_names must name each column of tabular inputs (N, F): got {len(names)} "
                    f"names for inputs of shape {x.shape}"
                )
            if len(set(names)) != len(names):
                raise ProbeError("feature_names must be unique")
            object.__setattr__(self, "feature_names", names)

    def _check_classes(self) -> None:
        if self.label_source is not None:
            if self.label_source not in LABEL_SOURCES:
                raise ProbeError(
                    f"label_source must be one of {', '.join(LABEL_SOURCES)} or None, got "
                    f"{self.label_source!r}"
                )
            if self.labels is None:
                raise ProbeError(f"label_source {self.label_source!r} describes labels, but there are none")
        if self.class_names is None:
            return
        if self.labels is None:
            raise ProbeError("class_names name the classes of the labels, but the probe set has no labels")
        names = {int(k): str(v) for k, v in dict(self.class_names).items()}
        unnamed = sorted(set(np.unique(self.labels).tolist()) - set(names))
        if unnamed:
            raise ProbeError(
                f"class_names must name the class of every label; labels {unnamed[:5]} have no name"
            )
        object.__setattr__(self, "class_names", names)

    @property
    def labels_are_classes(self) -> bool:
        """Whether the labels are the model's class indices: given with the data or mapped by
        ``probe.class_index``, not an image folder's sorted positions (accuracy means nothing then)."""
        return self.labels is not None and self.label_source != FOLDER_ORDER

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs.shape[1:])

    def batches(self, batch_size: int) -> Iterator[ProbeBatch]:
        """Consecutive batches; only the current one is read from a memory-mapped probe set."""
        for start in range(0, len(self), batch_size):
            stop = start + batch_size
            yield ProbeBatch(
                start=start,
                inputs=np.array(self.inputs[start:stop]),  # a copy, never a view of the mapped file
                labels=None if self.labels is None else self.labels[start:stop],
                ids=self.ids[start:stop],
            )
            release_pages(self.inputs)

    def head(self, n: int) -> ProbeSet:
        """The first ``n`` samples."""
        return self.sample(n)

    def sample(self, n: int, how: str = "first", seed: int = 0) -> ProbeSet:
        """At most ``n`` samples, keeping their ids and their order in the probe set.

        ``first`` takes the first ``n``; ``random`` draws ``n`` without replacement; ``stratified``
        draws from each label in proportion to its share (largest remainders, at least one per label
        when ``n`` allows), so a small sample still covers every class. Both draws are seeded.
        """
        if how not in SAMPLINGS:
            raise ProbeError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {how!r}")
        if n >= len(self):
            return self
        if how == "first":
            index = np.arange(n)
        elif how == "random":
            index = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        else:
            if self.labels is None:
                raise ProbeError("sampling 'stratified' needs probe labels, but the probe set has none")
            index = stratified_index(self.labels, n, seed)
        return self.take(index)

    def take(self, index: np.ndarray) -> ProbeSet:
        """The samples at ``index`` (sorted positions), copied; a mapped probe set spills to disk."""
        index = np.asarray(index, dtype=np.int64)
        if index.size and np.array_equal(index, np.arange(len(index))):
            rows: slice | np.ndarray = slice(0, len(index))
        else:
            rows = index
        inputs = _take_rows(self.inputs, rows)
        masks = None if self.masks is None else _take_rows(self.masks, rows)
        subset = ProbeSet(
            inputs,
            None if self.labels is None else self.labels[rows],
            masks,
            self.ids[rows],
            self.feature_names,
            self.class_names,
            self.label_source,
            None if self.attention_mask is None else self.attention_mask[rows],
            None if self.tokens is None else self.tokens[rows],
            self.token_ids,
            None if self.token_type_ids is None else self.token_type_ids[rows],
        )
        for array in (inputs, masks):
            keep_alive(subset, array)
        return subset

    def sha256(self) -> str:
        """A hash of every value in the probe set (MLflow's own digest samples only the first rows).

        Inputs, labels, masks and ids are hashed in row chunks, so a memory-mapped probe set is
        never read whole into memory.
        """
        digest = hashlib.sha256()
        arrays = (
            ("inputs", self.inputs),
            ("labels", self.labels),
            ("masks", self.masks),
            ("ids", self.ids),
            ("attention_mask", self.attention_mask),
            ("token_type_ids", self.token_type_ids),
        )
        for name, array in arrays:
            if array is None:
                continue
            digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
            for chunk in _chunks(array):
                if array.dtype.kind == "U":
                    digest.update(("\x00".join(chunk.tolist()) + "\x00").encode())
                else:
                    digest.update(np.ascontiguousarray(chunk).tobytes())
            release_pages(array)
        if self.feature_names is not None:
            digest.update(("feature_names:" + "\x00".join(self.feature_names)).encode())
        return digest.hexdigest()

    @classmethod
    def from_npz(cls, path: str | Path) -> ProbeSet:
        """Load a ``.npz`` or ``.npy`` probe file as it is (no preprocessing); see ``load_npz``."""
        return load_npz(path)


def stratified_index(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted positions of ``n`` samples drawn per label in proportion to the label's count."""
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * n / counts.sum()
    quota = np.floor(share).astype(np.int64)
    if n >= len(classes):
        quota = np.maximum(quota, 1)  # every class present when there is room for it
    # Hand out what is left by largest remainder (ties to the more frequent class), then trim any excess.
    while quota.sum() < n:
        room = np.where(quota < counts, share - quota, -np.inf)
        quota[int(np.argmax(room))] += 1
    while quota.sum() > n:
        over = np.where(quota > 1, quota - share, -np.inf)
        quota[int(np.argmax(over))] -= 1
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False)
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked))


def _take_rows(array: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    """``array[rows]``; from a mapped array the rows are copied chunk by chunk into a spill file."""
    if not isinstance(array, np.memmap):
        return array[rows]
    index = np.arange(len(array))[rows]
    writer = SpillWriter("subset")
    try:
        for start in range(0, len(index), CHUNK_ROWS):
            writer.append(array[index[start : start + CHUNK_ROWS]])
            release_pages(array)
        return writer.finish()
    except BaseException:
        writer.discard()
        raise


def load_npz(path: str | Path, *, mmap: bool = True) -> ProbeSet:
    """A ``.npy`` file of inputs (memory-mapped), or a ``.npz`` with ``inputs`` (or ``x``/``images``)
    and optional ``labels``/``y``, ``masks``, ``ids`` and ``feature_names``; or a text probe: a
    ``.npz`` with ``input_ids`` (N, L) and optional ``attention_mask``, ``token_type_ids``,
    ``labels``, ``ids`` and ``tokens`` (the tokens as strings, for the report).

    A ``.npz`` member cannot be mapped (it may be compressed): it is read once, in full. Use a
    ``.npy`` file for a probe set larger than memory.
    """
    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"probe file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        return ProbeSet(read_npy(path, mmap=mmap))
    if path.suffix != ".npz":
        raise ProbeError(f"probe file {str(path)!r} must be .npz or .npy")
    with open_npz(path) as data:
        keys = set(data.files)

        def pick(*names: str) -> np.ndarray | None:
            for name in names:
                if name in keys:
                    return npz_member(data, name, path)
            return None

        if "texts" in keys and "input_ids" not in keys:
            raise ProbeError(
                f"probe file {str(path)!r} holds raw texts; tokenizing them needs a tokenizer: set "
                "probe.tokenizer to a folder saved with save_pretrained, or audit a model logged with "
                "mlflow.transformers (its tokenizer is used)"
            )
        if "input_ids" in keys:  # a text probe
            return ProbeSet(
                pick("input_ids"),
                pick("labels", "y"),
                ids=pick("ids"),
                attention_mask=pick("attention_mask"),
                tokens=pick("tokens"),
                token_type_ids=pick("token_type_ids"),
            )
        inputs = pick("inputs", "x", "images")
        if inputs is None:
            raise ProbeError(
                f"probe file {str(path)!r} has arrays {sorted(keys)}; it needs one named "
                "'inputs' (or 'x' or 'images'), with optional 'labels', 'masks', 'ids' and 'feature_names'"
            )
        names = pick("feature_names")
        return ProbeSet(
            inputs, pick("labels", "y"), pick("masks"), pick("ids"), None if names is None else tuple(names)
        )
