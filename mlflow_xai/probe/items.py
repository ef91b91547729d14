"""Probe samples one at a time (a torch Dataset, a DataLoader, the files of an image folder), streamed
into spill files a chunk at a time, preprocessed on the way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

import numpy as np
import torch

from mlflow_xai.config.sections import PreprocessConfig
from mlflow_xai.errors import ProbeError
from mlflow_xai.probe.memory import SpillWriter, keep_alive
from mlflow_xai.probe.preprocess import preprocess_batch, preprocess_masks
from mlflow_xai.probe.probe_set import ProbeSet

CHUNK_BYTES = 32 * 2**20  # converted samples held in memory before they are spilled to disk


# --------------------------------------------------------------------------------------------------
# Datasets and DataLoaders


def _dataset_items(dataset: torch.utils.data.Dataset) -> Iterable[Any]:
    if isinstance(dataset, torch.utils.data.IterableDataset):
        return dataset
    try:
        size = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise ProbeError(
            f"the probe Dataset {type(dataset).__name__} has no __len__; give it one, or make it an "
            "IterableDataset"
        ) from None
    return (dataset[i] for i in range(size))


def _unbatch(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
    """The samples of a DataLoader's batches, one by one (their batch size is the loader's)."""
    for batch in loader:
        inputs, labels, masks, ids = _fields(batch, "DataLoader batch")
        inputs = _to_numpy(inputs, "DataLoader inputs")
        labels = None if labels is None else _to_numpy(labels, "DataLoader labels")
        masks = None if masks is None else _to_numpy(masks, "DataLoader masks")
        for i in range(len(inputs)):
            yield {
                "inputs": inputs[i],
                "labels": None if labels is None else labels[i],
                "masks": None if masks is None else masks[i],
                "ids": None if ids is None else ids[i],
            }


def _fields(item: Any, what: str) -> tuple[Any, Any, Any, Any]:
    if isinstance(item, Mapping):
        return (
            _pick(item, _INPUT_KEYS, f"a {what} (a dict with keys {sorted(item)})"),
            _pick(item, _LABEL_KEYS),
            _pick(item, _MASK_KEYS),
            _pick(item, _ID_KEYS),
        )
    if isinstance(item, (tuple, list)):
        if len(item) == 2:
            return item[0], item[1], None, None
        if len(item) == 1:
            return item[0], None, None, None
        raise ProbeError(
            f"a {what} is a sequence of {len(item)} items; yield (inputs, label), (inputs,), "
            "bare inputs, or a dict with 'inputs' and optional 'label', 'mask', 'id'"
        )
    return item, None, None, None


def _to_numpy(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()  # numpy has no bfloat16; float32 holds every bfloat16 exactly
        return value.numpy()
    if isinstance(value, (np.ndarray, np.generic, int, float, list)):
        return np.asarray(value)
    if _is_pil_image(value):  # e.g. torchvision's ImageFolder without a transform
        return np.asarray(value.convert("RGB")).transpose(2, 0, 1)
    raise ProbeError(f"{what} must be tensors, numpy arrays or PIL images, got {type(value).__name__}")


def _is_pil_image(value: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with torchvision and matplotlib
        return False
    return isinstance(value, Image.Image)

_INPUT_KEYS = ("inputs", "input", "x", "images", "image")
_LABEL_KEYS = ("labels", "label", "y", "targets", "target")
_MASK_KEYS = ("masks", "mask")
_ID_KEYS = ("ids", "id")


def _pick(arrays: Mapping[str, Any], keys: tuple[str, ...], where: str | None = None) -> Any:
    for key in keys:
        if key in arrays:
            return arrays[key]
    if where is not None:
        raise ProbeError(
            f"{where} has {sorted(arrays)}; it needs inputs under one of {', '.join(keys)}, with "
            f"optional labels ({', '.join(_LABEL_KEYS)}), masks ({', '.join(_MASK_KEYS)}) and ids"
        )
    return None


class _Spill:
    """Raw inputs and masks gathered into chunks, each preprocessed and appended to a spill file."""

    def __init__(self, preprocess: PreprocessConfig | None) -> None:
        self.preprocess = preprocess
        self.writers = {"inputs": SpillWriter("inputs"), "masks": SpillWriter("masks")}
        self.pending: dict[str, list[np.ndarray]] = {"inputs": [], "masks": []}
        self.pending_bytes = 0

    def add(self, x: np.ndarray, mask: np.ndarray | None) -> None:
        first = self.pending["inputs"][0] if self.pending["inputs"] else None
        if first is not None and (x.shape != first.shape or x.dtype != first.dtype):
            self.flush()  # raw sizes may differ when resize evens them out; else the writer says which
        self.pending["inputs"].append(x)
        self.pending_bytes += x.nbytes
        if mask is not None:
            self.pending["masks"].append(mask)
        if self.pending_bytes >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.pending["inputs"]:
            raw = np.stack(self.pending["inputs"])
            self.writers["inputs"].append(preprocess_batch(raw, self.preprocess))
        if self.pending["masks"]:
            masks = np.stack(self.pending["masks"]).astype(bool)
            self.writers["masks"].append(preprocess_masks(masks, self.preprocess))
        self.pending["inputs"], self.pending["masks"], self.pending_bytes = [], [], 0

    def finish(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        self.flush()
        return self.writers["inputs"].finish(), self.writers["masks"].finish()

    def discard(self) -> None:
        for writer in self.writers.values():
            writer.discard()


def _label(y: Any, count: int) -> int:
    y = _to_numpy(y, "probe labels")
    if y.ndim != 0 or not np.issubdtype(y.dtype, np.integer):
        raise ProbeError(f"probe sample {count} has label {y!r}; a label must be one integer class index")
    return int(y)


def _from_items(
    items: Iterable[Any],
    preprocess: PreprocessConfig | None,
    limit: int | None,
    *,
    class_names: Mapping[int, str] | None = None,
    label_source: str | None = None,
) -> ProbeSet:
    """Stream samples into spill files, preprocessing them a chunk at a time."""
    spill = _Spill(preprocess)
    labels: list[int] = []
    ids: list[str] = []
    carried = None  # which of label, mask and id the first sample carries
    try:
        for count, item in enumerate(items if limit is None else islice(items, limit)):  # no extra fetch
            x, y, m, i = _fields(item, "probe sample")
            if carried is None:
                carried = (y is not None, m is not None, i is not None)
            if (y is not None, m is not None, i is not None) != carried:
                raise ProbeError(
                    f"probe sample {count} differs from the first in which of label, mask and id it "
                    "carries; every sample must carry the same ones"
                )
            spill.add(_to_numpy(x, "probe inputs"), None if m is None else _to_numpy(m, "probe masks"))
            if y is not None:
                labels.append(_label(y, count))
            if i is not None:
                ids.append(str(i))
        inputs, masks = spill.finish()
        if inputs is None:
            raise ProbeError("the probe set is empty: it needs at least one sample")
        has_label, _, has_id = carried
        probe = ProbeSet(
            inputs,
            np.asarray(labels, dtype=np.int64) if has_label else None,
            masks,
            np.asarray(ids) if has_id else None,
            class_names=None if class_names is None else dict(class_names),
            label_source=label_source,
        )
    except BaseException:
        spill.discard()
        raise
    keep_alive(probe, inputs)
    keep_alive(probe, masks)
    return probe
