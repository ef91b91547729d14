"""Every kind of probe data to one ``ProbeSet``, preprocessed into the model's input space.

Sources: a ``ProbeSet`` (used as it is), a numpy array, a ``.npy``/``.npz`` file, an image folder laid
out by class (as ``torchvision.datasets.ImageFolder``), a torch ``Dataset`` or ``DataLoader`` yielding
``(x, y)`` pairs, bare inputs or dicts. Whatever has to be converted is converted a chunk at a time
and spilled to a memory-mapped file, so memory does not grow with the size of the probe set.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlflow_xai.config.sections import PreprocessConfig, ProbeConfig
from mlflow_xai.errors import ConfigError, ProbeError
from mlflow_xai.probe.probe_set import (
    CHUNK_ROWS,
    CLASS_INDEX,
    FOLDER_ORDER,
    ProbeSet,
    SpillWriter,
    keep_alive,
    load_npz,
    npz_member,
    open_npz,
    read_npy,
    release_pages,
)

# The image files torchvision's ImageFolder accepts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CHUNK_BYTES = 32 * 2**20  # converted samples held in memory before they are spilled to disk

_INPUT_KEYS = ("inputs", "input", "x", "images", "image")
_LABEL_KEYS = ("labels", "label", "y", "targets", "target")
_MASK_KEYS = ("masks", "mask")
_ID_KEYS = ("ids", "id")
# The arrays a preprocessed .npz may hold, as a refusal of an unreadable one names them.
_NPZ_ARRAYS = (
    f"numeric arrays: inputs named one of {', '.join(_INPUT_KEYS)}, optional labels "
    f"({', '.join(_LABEL_KEYS)}), masks ({', '.join(_MASK_KEYS)}) and ids ({', '.join(_ID_KEYS)}), "
    "which may be strings"
)


def load_probe(
    source: Any,
    config: ProbeConfig | None = None,
    *,
    labels: np.ndarray | None = None,
    feature_names: Sequence[str] | None = None,
    limit: int | None = None,
) -> ProbeSet:
    """A ``ProbeSet`` from ``source``, preprocessed as ``config.preprocess`` says.

    ``labels`` and ``feature_names`` go with an array source. ``limit`` stops reading after that
    many samples (``max_samples`` with ``sampling: first``).
    """
    config = config or ProbeConfig()
    preprocess = config.preprocess
    if config.class_index is not None and not (isinstance(source, (str, Path)) and Path(source).is_dir()):
        raise ConfigError(
            f"probe.class_index maps the class folders of an image folder to the model's classes, but "
            f"the probe is {_not_a_folder(source)}, whose labels are used as they are; give them as the "
            "model's class indices (a torch Dataset can map its own with a target_transform) and drop "
            "probe.class_index, or give an image folder"
        )
    if isinstance(source, ProbeSet):
        if preprocess is not None:
            raise ConfigError(
                "probe.preprocess is set but the probe is a ProbeSet, which is already in the model's "
                "input space; pass the raw data (an array, a file, a folder or a Dataset) to have it "
                "preprocessed, or drop probe.preprocess"
            )
        return source
    if (labels is not None or feature_names is not None) and not isinstance(
        source, (np.ndarray, torch.Tensor)
    ):
        raise ProbeError(
            "labels and feature_names go with an array of inputs; other probe sources carry their own"
        )
    if isinstance(source, (str, Path)):
        return _load_path(Path(source), config, limit)
    if isinstance(source, torch.Tensor):
        source = _to_numpy(source, "probe inputs")
    if isinstance(source, np.ndarray):
        return _from_arrays(source, labels, None, None, preprocess, feature_names)
    if isinstance(source, torch.utils.data.DataLoader):
        return _from_items(_unbatch(source), preprocess, limit)
    if isinstance(source, torch.utils.data.Dataset):
        return _from_items(_dataset_items(source), preprocess, limit)
    raise ProbeError(
        f"cannot read a probe set from {type(source).__name__}; give a ProbeSet, a numpy array, a "
        ".npy/.npz file, an image folder (one subfolder per class), a torch Dataset or a DataLoader"
    )


def _load_path(path: Path, config: ProbeConfig, limit: int | None) -> ProbeSet:
    """A probe set from an image folder, a ``.npy`` or a ``.npz`` file; a file that needs no
    preprocessing stays memory-mapped."""
    preprocess = config.preprocess
    if path.is_dir():
        return load_image_folder(path, preprocess, limit=limit, class_index=config.class_index)
    if path.suffix == ".npy":
        if preprocess is None:
            return load_npz(path)  # memory-mapped, used as it is
        return _from_arrays(read_npy(path), None, None, None, preprocess)
    if path.suffix == ".npz" and preprocess is not None:
        with open_npz(path, _NPZ_ARRAYS) as data:
            arrays = {k: npz_member(data, k, path, _NPZ_ARRAYS) for k in data.files}
        return _from_arrays(
            _pick(arrays, _INPUT_KEYS, f"probe file {str(path)!r}"),
            _pick(arrays, _LABEL_KEYS),
            _pick(arrays, _MASK_KEYS),
            _pick(arrays, _ID_KEYS),
            preprocess,
        )
    return load_npz(path)


def _not_a_folder(source: Any) -> str:
    """What a probe source that is not an image folder is, as a refusal names it."""
    if isinstance(source, (str, Path)):
        where = "does not exist" if not Path(source).exists() else "is a file"
        return f"{str(source)!r}, which {where}, not a folder"
    if isinstance(source, ProbeSet):
        return "a ProbeSet"
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return f"an array ({type(source).__name__})"
    if isinstance(source, torch.utils.data.DataLoader):
        return f"a DataLoader (of {type(source.dataset).__name__})"
    if isinstance(source, torch.utils.data.Dataset):
        return f"a Dataset ({type(source).__name__})"
    return f"a {type(source).__name__}"


# --------------------------------------------------------------------------------------------------
# Preprocessing


def preprocess_batch(
    x: np.ndarray, config: PreprocessConfig | None, what: str = "probe inputs"
) -> np.ndarray:
    """Raw inputs (B, ...) to model inputs: resize, center_crop, scale, normalize.

    Resizing 8-bit images before scaling them gives what torchvision's ``Resize`` gives on a PIL
    image, up to one 8-bit level where rounding differs.
    """
    integer = np.issubdtype(x.dtype, np.integer) or x.dtype == bool
    if config is None:
        if integer:
            raise ProbeError(_scale_advice(x.dtype, what))
        return x
    if integer and config.scale is None:
        raise ProbeError(_scale_advice(x.dtype, what))
    if not (integer or np.issubdtype(x.dtype, np.floating)):
        raise ProbeError(f"{what} must be numbers, got {x.dtype}")
    spatial = config.resize is not None or config.center_crop is not None or config.mean is not None
    if spatial and x.ndim != 4:
        raise ProbeError(
            f"probe.preprocess resize, center_crop and mean/std apply to images (N, C, H, W); "
            f"{what} have shape {list(x.shape)}"
        )
    dtype = torch.float64 if x.dtype == np.float64 else torch.float32
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.dtype != torch.uint8:  # 8-bit images are resized as 8-bit, like PIL images in torchvision
        t = t.to(dtype)
    t = _resize_and_crop(t, config, antialias=True).to(dtype)
    if config.scale is not None:
        t = t / config.scale
    if config.mean is not None:
        channels = t.shape[1]
        if len(config.mean) != channels:
            raise ProbeError(
                f"probe.preprocess mean/std have {len(config.mean)} values but {what} have {channels} "
                "channels; give one value per channel"
            )
        mean = torch.tensor(config.mean, dtype=t.dtype).view(1, -1, 1, 1)
        std = torch.tensor(config.std, dtype=t.dtype).view(1, -1, 1, 1)
        t = (t - mean) / std
    return t.numpy()


def preprocess_masks(masks: np.ndarray, config: PreprocessConfig | None) -> np.ndarray:
    """Masks (B, H, W) follow the images' resize (nearest pixel) and crop."""
    if config is None or (config.resize is None and config.center_crop is None):
        return masks
    t = torch.from_numpy(np.ascontiguousarray(masks).astype(np.uint8)).unsqueeze(1)
    return _resize_and_crop(t, config, antialias=False).squeeze(1).numpy().astype(bool)


def _resize_and_crop(t: torch.Tensor, config: PreprocessConfig, *, antialias: bool) -> torch.Tensor:
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as tvf

    mode = InterpolationMode.BILINEAR if antialias else InterpolationMode.NEAREST
    if config.resize is not None:
        size = [config.resize] if isinstance(config.resize, int) else list(config.resize)
        t = tvf.resize(t, size, interpolation=mode, antialias=antialias)
    if config.center_crop is not None:
        crop = config.center_crop
        size = [crop, crop] if isinstance(crop, int) else list(crop)
        if size[0] > t.shape[-2] or size[1] > t.shape[-1]:
            raise ProbeError(
                f"probe.preprocess center_crop {size} is larger than the image ({list(t.shape[-2:])} "
                "after resize); crop at most the image size"
            )
        t = tvf.center_crop(t, size)
    return t


def _scale_advice(dtype: np.dtype, what: str) -> str:
    return (
        f"{what} are {dtype}, but the model takes floating point and integer data is never scaled "
        "by guess; declare the scale in the config (probe: {preprocess: {scale: 255}} for 8-bit "
        "images) or convert the data to floats yourself"
    )


# --------------------------------------------------------------------------------------------------
# Arrays


def _from_arrays(
    inputs: np.ndarray,
    labels: np.ndarray | None,
    masks: np.ndarray | None,
    ids: np.ndarray | None,
    preprocess: PreprocessConfig | None,
    feature_names: Sequence[str] | None = None,
) -> ProbeSet:
    """Arrays already in model space are used as they are (a mapped file stays mapped); others are
    converted chunk by chunk into a spill file."""
    if not isinstance(inputs, np.ndarray):
        raise ProbeError(f"probe inputs must be a numpy array, got {type(inputs).__name__}")
    if preprocess is None:
        if inputs.ndim >= 1 and (np.issubdtype(inputs.dtype, np.integer) or inputs.dtype == bool):
            raise ProbeError(_scale_advice(inputs.dtype, "probe inputs"))
        return ProbeSet(inputs, labels, masks, ids, feature_names)
    if inputs.ndim < 2 or len(inputs) == 0:
        return ProbeSet(inputs, labels, masks, ids)  # ProbeSet says what is wrong with the shape
    writer = SpillWriter("inputs")
    rows = _rows_per_chunk(inputs)
    try:
        for start in range(0, len(inputs), rows):
            writer.append(preprocess_batch(inputs[start : start + rows], preprocess))
            release_pages(inputs)
        converted = writer.finish()
        if masks is not None:
            masks = preprocess_masks(np.asarray(masks), preprocess)
        probe = ProbeSet(converted, labels, masks, ids, feature_names)
    except BaseException:
        writer.discard()
        raise
    keep_alive(probe, converted)
    return probe


def _rows_per_chunk(array: np.ndarray) -> int:
    per_row = max(1, array[:1].nbytes)
    return int(max(1, min(CHUNK_ROWS, CHUNK_BYTES // per_row)))


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


# --------------------------------------------------------------------------------------------------
# Image folders


def load_image_folder(
    root: str | Path,
    preprocess: PreprocessConfig | None,
    *,
    limit: int | None = None,
    class_index: Mapping[str, int] | None = None,
) -> ProbeSet:
    """``root/<class>/.../<image>``: the id is the path relative to ``root``, in sorted order.

    The label is ``class_index[<class>]`` (``probe.class_index``: the model's class of each
    folder), which must name every class folder; without it, the index of the class folder in
    sorted order, as ``torchvision.datasets.ImageFolder`` labels it. Those positions are the model's
    classes only for a model trained on this very layout, so the probe set records which of the two
    its labels are (``label_source``) and keeps the folder names (``class_names``).

    Images are read as RGB uint8, so the config must declare ``probe.preprocess.scale`` (255).
    """
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ProbeError(
            f"image folder {str(root)!r} has no class subfolders; lay it out as "
            f"{root}/<class name>/<image file>, one subfolder per class"
        )
    label_of = _folder_labels(root, classes, class_index)
    files = _image_files(root, classes, label_of)
    if limit is not None:
        files = files[:limit]

    def items() -> Iterator[dict[str, Any]]:
        from PIL import Image, UnidentifiedImageError

        for path, label in files:
            try:
                with Image.open(path) as image:
                    pixels = _to_numpy(image, "probe images")  # RGB, CHW as the model takes it
            except (OSError, UnidentifiedImageError) as exc:
                raise ProbeError(f"cannot read image {str(path)!r}: {exc}") from None
            yield {
                "inputs": pixels,
                "labels": label,
                "ids": path.relative_to(root).as_posix(),
            }

    return _from_items(
        items(),
        preprocess,
        None,
        class_names={label: name for name, label in label_of.items()},
        label_source=FOLDER_ORDER if class_index is None else CLASS_INDEX,
    )


def _folder_labels(root: Path, classes: list[str], class_index: Mapping[str, int] | None) -> dict[str, int]:
    """Each class folder's label: its ``class_index`` entry, or its position in sorted order."""
    if class_index is None:
        return {name: position for position, name in enumerate(classes)}
    missing = [name for name in classes if name not in class_index]
    if missing:
        raise ConfigError(
            f"probe.class_index does not name {len(missing)} of the {len(classes)} class folders of "
            f"{str(root)!r}: {_few(missing)}; it must give the model's class index of every class "
            f"folder (it names folders such as {_few(sorted(class_index), 3)})"
        )
    return {name: class_index[name] for name in classes}


def _image_files(root: Path, classes: list[str], label_of: Mapping[str, int]) -> list[tuple[Path, int]]:
    """(image file, label) of every class folder, in sorted order; a class folder without one fails."""
    files: list[tuple[Path, int]] = []
    for name in classes:
        found = sorted(
            p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not found:
            raise ProbeError(
                f"class folder {name!r} of {str(root)!r} has no image file; allowed extensions: "
                f"{', '.join(IMAGE_EXTENSIONS)}"
            )
        files.extend((p, label_of[name]) for p in found)
    return files


def _few(names: Sequence[str], shown: int = 5) -> str:
    """At most ``shown`` names, quoted, and how many more there are."""
    text = ", ".join(repr(name) for name in names[:shown])
    return text if len(names) <= shown else f"{text} and {len(names) - shown} more"


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
