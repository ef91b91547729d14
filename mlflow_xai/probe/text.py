"""Text probes from raw texts: tokenized by a tokenizer saved locally, never downloaded.

A ``.npz`` with ``texts`` (one string per sample) and optional ``labels`` and ``ids`` is tokenized
with ``probe.tokenizer`` (a folder written by ``save_pretrained``, loaded with
``local_files_only``) or with the tokenizer logged beside a model by ``mlflow.transformers``. The
tokenizer also gives the pad, mask and unknown token ids and the special tokens a baseline keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlflow_xai.errors import ConfigError, ProbeError
from mlflow_xai.probe.probe_set import ProbeSet


def holds_raw_texts(source: Any) -> bool:
    """Whether ``source`` is an ``.npz`` of raw texts (``texts`` and no ``input_ids``)."""
    if not isinstance(source, (str, Path)) or Path(source).suffix != ".npz" or not Path(source).is_file():
        return False
    try:
        with np.load(source, allow_pickle=False) as data:
            return "texts" in data.files and "input_ids" not in data.files
    except Exception:  # unreadable: the probe loader says why
        return False


def load_tokenizer(path: str | Path) -> Any:
    """The Hugging Face tokenizer saved in the folder ``path``; nothing is fetched from the network."""
    folder = Path(path)
    if not folder.is_dir():
        raise ProbeError(
            f"probe.tokenizer {str(path)!r} is not a folder; it must hold a tokenizer saved with "
            "save_pretrained (nothing is downloaded)"
        )
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "probe.tokenizer needs the transformers package: pip install 'mlflow-xai[text]'"
        ) from None
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # a folder without tokenizer files, or damaged ones
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise ProbeError(f"cannot load a tokenizer from {str(path)!r}: {why}") from None


def tokenizer_ids(tokenizer: Any) -> dict[str, Any]:
    """The pad, mask and unknown token ids a tokenizer defines, and its special token ids."""
    out: dict[str, Any] = {}
    for kind in ("pad", "mask", "unk"):
        value = getattr(tokenizer, f"{kind}_token_id", None)
        if isinstance(value, int):
            out[f"{kind}_token_id"] = value
    out["special_token_ids"] = sorted(int(i) for i in getattr(tokenizer, "all_special_ids", []))
    return out


def tokenized_probe(
    texts: Sequence[str],
    tokenizer: Any,
    *,
    labels: np.ndarray | None = None,
    ids: np.ndarray | None = None,
    max_length: int | None = None,
) -> ProbeSet:
    """A text probe of ``texts``: padded to the longest (truncated at ``max_length``), with the
    tokens as the tokenizer spells them and its token ids."""
    texts = [str(t) for t in texts]
    if not texts:
        raise ProbeError("the probe set is empty: it needs at least one text")
    encoded = tokenizer(texts, padding=True, truncation=max_length is not None, max_length=max_length)
    input_ids = np.asarray(encoded["input_ids"], dtype=np.int64)
    mask = np.asarray(encoded["attention_mask"], dtype=np.int64)
    tokens = np.array([tokenizer.convert_ids_to_tokens(row.tolist()) for row in input_ids]).astype(str)
    types = encoded.get("token_type_ids")
    return ProbeSet(
        input_ids,
        labels,
        ids=ids,
        attention_mask=mask,
        tokens=tokens,
        token_ids=tokenizer_ids(tokenizer),
        token_type_ids=None if types is None else np.asarray(types, dtype=np.int64),
    )
