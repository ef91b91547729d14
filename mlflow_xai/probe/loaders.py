"""Every kind of probe data to one ``ProbeSet``, preprocessed into the model's input space.

Sources: a ``ProbeSet`` (used as it is), a numpy array, a ``.npy``/``.npz`` file, an image folder laid
out by class (as ``torchvision.datasets.ImageFolder``), a torch ``Dataset`` or ``DataLoader`` yielding
``(x, y)`` pairs, bare inputs or dicts. Whatever has to be converted is converted a chunk at a time
and spilled to a memory-mapped file, so memory does not grow with the size of the probe set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlflow_xai.config.sections import PreprocessConfig, ProbeConfig
from mlflow_xai.errors import ConfigError, ProbeError
from mlflow_xai.probe.files import npz_member, open_npz, read_npy
from mlflow_xai.probe.items import (
    _ID_KEYS,
    _INPUT_KEYS,
    _LABEL_KEYS,
    _MASK_KEYS,
    CHUNK_BYTES,
    _dataset_items,
    _from_items,
    _pick,
    _to_numpy,
    _unbatch,
)
from mlflow_xai.probe.memory import SpillWriter, keep_alive, release_pages
from mlflow_xai.probe.preprocess import _scale_advice, preprocess_batch, preprocess_masks
from mlflow_xai.probe.probe_set import CHUNK_ROWS, CLASS_INDEX, FOLDER_ORDER, ProbeSet, load_npz
from mlflow_xai.probe.text import load_tokenizer, tokenized_probe

# The image files torchvision's ImageFolder accepts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

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
    tokenizer: Any = None,
) -> ProbeSet:
    """A ``ProbeSet`` from ``source``, preprocessed as ``config.preprocess`` says.

    Raw texts (an ``.npz`` with ``texts``) are tokenized by ``config.tokenizer`` or, without one,
    by ``tokenizer`` (a model's own, logged with it).

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
        return _load_path(Path(source), config, limit, tokenizer)
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


def _load_path(path: Path, config: ProbeConfig, limit: int | None, tokenizer: Any = None) -> ProbeSet:
    """A probe set from an image folder, a ``.npy`` or a ``.npz`` file; a file that needs no
    preprocessing stays memory-mapped."""
    preprocess = config.preprocess
    if path.suffix == ".npz" and path.is_file():
        with open_npz(path) as data:
            keys = set(data.files)
            if "texts" in keys and "input_ids" not in keys:
                arrays = {k: npz_member(data, k, path) for k in keys & {"texts", "labels", "y", "ids"}}
                if config.tokenizer is not None:
                    tokenizer = load_tokenizer(config.tokenizer)
                if tokenizer is None:
                    return load_npz(path)  # refuses raw texts without a tokenizer, with the reason
                labels = arrays.get("labels", arrays.get("y"))
                return tokenized_probe(
                    arrays["texts"],
                    tokenizer,
                    labels=labels,
                    ids=arrays.get("ids"),
                    max_length=config.max_length,
                )
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
        if inputs.ndim == 2 and np.issubdtype(inputs.dtype, np.integer):
            return ProbeSet(inputs, labels, masks, ids, feature_names)  # token ids: a text probe
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
