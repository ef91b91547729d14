"""Class indices of image folders and class names, read from the config or from a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow_xai.strict import brief

# The two layouts of probe.class_index, as its refusals name them.
CLASS_INDEX_LAYOUTS = (
    'a mapping of folder name to class index ({"cat": 281}), or of class index to [folder name, '
    'description] as in ImageNet\'s imagenet_class_index.json ({"281": ["n02123045", "tabby"]})'
)


def read_class_index(path: str | Path) -> dict[str, int]:
    """``{folder name: class index}`` from a JSON file in either layout ``ProbeConfig`` describes."""
    import json  # only a class index file needs it

    where = f"class index file {str(path)!r}"
    file = Path(path)
    if not file.is_file():
        missing = "is a folder, not a file" if file.is_dir() else "does not exist"
        raise ValueError(
            f"{where} {missing}; give a JSON file holding {CLASS_INDEX_LAYOUTS}, or the mapping inline"
        )

    def no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # json keeps the last of two equal keys silently; a repeated folder or class is a mistake.
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise ValueError(f"{where} has the key {key!r} twice; each key must appear once")
            seen[key] = value
        return seen

    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where} is not UTF-8 text; a class index file is JSON") from None
    except OSError as exc:
        raise ValueError(f"{where} cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(text, object_pairs_hook=no_repeated_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{where} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    return class_index_of(data, where)


def class_index_of(data: Any, where: str) -> dict[str, int]:
    """``{folder name: class index}`` from either layout, each entry checked; ``where`` names the
    source in a refusal ("the mapping" inline, the file otherwise)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must hold {CLASS_INDEX_LAYOUTS}, got {brief(data)}")
    if not data:
        raise ValueError(f"{where} is empty; it must name the class of each class folder of the probe")
    imagenet = [isinstance(value, (list, tuple)) for value in data.values()]
    if any(imagenet) and not all(imagenet):
        raise ValueError(
            f"{where} mixes the two layouts (some values are lists, some are not); it must be "
            f"{CLASS_INDEX_LAYOUTS}"
        )
    pairs = [_imagenet_entry(k, v, where) for k, v in data.items()] if all(imagenet) else list(data.items())
    index: dict[str, int] = {}
    owner: dict[int, str] = {}
    for name, cls in pairs:
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"{where} has the key {name!r}; a folder name is a non-empty string (quote a name "
                "that YAML would read as a number, e.g. '001': 3)"
            )
        if type(cls) is not int or cls < 0:  # bool is an int to Python, never a class
            raise ValueError(
                f"{where} maps folder {name!r} to {brief(cls)}; a class index is an integer >= 0, "
                "the position of the class in the model's output"
            )
        if name in index:
            raise ValueError(
                f"{where} names folder {name!r} for both class {index[name]} and class {cls}; a folder "
                "holds one class"
            )
        if cls in owner:
            raise ValueError(
                f"{where} maps both {owner[cls]!r} and {name!r} to class {cls}; each class folder must "
                "be a different class of the model"
            )
        index[name], owner[cls] = cls, name
    return index


def _imagenet_entry(key: Any, value: Any, where: str) -> tuple[Any, int]:
    """(folder name, class index) of one ``"281": ["n02123045", "tabby"]`` entry."""
    number = key if type(key) is int else None
    if isinstance(key, str) and key.isascii() and key.isdecimal():
        number = int(key)
    if number is None:
        raise ValueError(
            f"{where} has the key {key!r} with a list value; in the layout of imagenet_class_index.json "
            'each key is a class index such as "281"'
        )
    if len(value) != 2 or not all(isinstance(part, str) for part in value):
        raise ValueError(
            f"{where} maps {key!r} to {brief(value)}; in the layout of imagenet_class_index.json each "
            'value is [folder name, description], e.g. ["n02123045", "tabby"]'
        )
    return value[0], number


def read_class_names(value: Any) -> dict[int, str]:
    """``{class index: name}`` from a list of names (position = index), a mapping, or the path of a
    file: JSON (a list, a mapping, or ImageNet's ``{"281": ["n02123045", "tabby"]}``, whose
    description is the name) or text with one name per line."""
    import json  # only class names need it

    where = "class_names"
    if isinstance(value, (str, Path)):
        where = f"class names file {str(value)!r}"
        file = Path(value)
        if not file.is_file():
            raise ValueError(
                f"{where} does not exist; give a JSON list or mapping of class names, a text file with "
                "one name per line, or the names inline"
            )
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{where} cannot be read as UTF-8 text: {exc}") from None
        if file.suffix.lower() == ".json":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
        else:
            value = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(value, list):
        pairs = list(enumerate(value))
    elif isinstance(value, Mapping):
        pairs = []
        for key, name in value.items():
            index = key if type(key) is int else None
            if isinstance(key, str) and key.isascii() and key.isdecimal():
                index = int(key)
            if index is None:
                raise ValueError(f"{where} has the key {key!r}; keys are class indices such as 281")
            if isinstance(name, list) and len(name) == 2:  # imagenet_class_index.json: [wnid, name]
                name = name[1]
            pairs.append((index, name))
    else:
        raise ValueError(
            f"{where} must be a list of names or a mapping of class index to name, got {brief(value)}"
        )
    names: dict[int, str] = {}
    for index, name in pairs:
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"{where} gives class {index} the name {brief(name)}; a name is a non-empty string"
            )
        names[index] = name
    if not names:
        raise ValueError(f"{where} is empty")
    return names
