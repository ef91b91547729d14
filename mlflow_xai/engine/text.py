"""The text side of an audit: the embedding layer, the token ids a baseline keeps or substitutes,
and the checks a text probe gets before any batch (``mlflow_xai.model.text`` explains why)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from mlflow_xai.config.audit_config import AuditConfig
from mlflow_xai.errors import ConfigError, ModelError, ProbeError
from mlflow_xai.model.handle import is_exported_graph
from mlflow_xai.model.text import (
    TextInputs,
    find_embedding,
    model_token_ids,
    takes_argument,
    takes_attention_mask,
)
from mlflow_xai.probe.probe_set import ProbeSet


def text_inputs(
    model: nn.Module,
    cfg: AuditConfig,
    attention_mask: np.ndarray,
    token_ids: Mapping[str, Any] | None = None,
    token_type_ids: np.ndarray | None = None,
) -> TextInputs:
    """The text side of an audit of ``model`` on a text probe with ``attention_mask``. Token ids come
    from ``cfg.text``, else from the probe's tokenizer (``token_ids``), else from the model's config;
    a baseline token none of them names is refused."""
    if is_exported_graph(model):
        raise ModelError(
            "a text probe is explained through the model's token embedding layer, replaced by a module "
            "hook, and an exported graph (MLflow's default pt2 format) runs no modules to hook; log the "
            'text model with serialization_format="pickle"'
        )
    text = cfg.text
    own = {
        **model_token_ids(model),
        **{k: v for k, v in (token_ids or {}).items() if k != "special_token_ids"},
    }
    substitutes = {}
    for kind in ("pad", "mask", "unk"):
        given = getattr(text, f"{kind}_token_id")
        token = given if given is not None else own.get(f"{kind}_token_id")
        if token is not None:
            substitutes[kind] = token
    for name, method in cfg.methods.enabled().items():
        kind = getattr(method, "baseline", None)
        if isinstance(kind, str) and kind != "zero" and kind not in substitutes:
            raise ConfigError(
                f"methods.{name}.baseline {kind!r} replaces tokens by the {kind} token, whose id neither "
                f"text.{kind}_token_id nor the model's config gives; set text.{kind}_token_id, or use "
                "baseline: zero"
            )
    eraser = cfg.checks.eraser
    if eraser is not None:
        needed = "pad" if eraser.removal == "delete" else eraser.baseline
        if needed != "zero" and needed not in substitutes:
            why = (
                "pads the end of a shortened sequence with"
                if eraser.removal == "delete"
                else "replaces tokens by"
            )
            raise ConfigError(
                f"checks.eraser {why} the {needed} token, whose id neither text.{needed}_token_id nor "
                f"the model's config gives; set text.{needed}_token_id"
            )
    special = {*text.special_token_ids, *(token_ids or {}).get("special_token_ids", [])}
    special.update(
        v for k, v in own.items() if k in ("bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")
    )
    special.discard(substitutes.get("pad", -1))  # padding is kept by the attention mask, not as a token
    return TextInputs(
        attention_mask=attention_mask,
        embedding=find_embedding(model, text.embedding_layer),
        with_mask=takes_attention_mask(model),
        special_ids=tuple(sorted(special)),
        substitutes=substitutes,
        token_type_ids=token_type_ids if takes_argument(model, "token_type_ids") else None,
    )


def check_text_methods(methods: Mapping[str, Any], *, text: bool) -> None:
    """Text probes take the methods over tokens, other probes the rest."""
    wrong = sorted(name for name, method in methods.items() if method.for_text != text)
    if not wrong:
        return
    if text:
        raise ConfigError(
            f"the probe holds token ids (a text probe), which {', '.join(wrong)} cannot explain; "
            "use layer_integrated_gradients (at the model's token embedding layer)"
        )
    raise ConfigError(
        f"{', '.join(wrong)} explains token ids through an embedding layer, but the probe is not a "
        "text probe (integer input_ids of shape (N, L)); use integrated_gradients"
    )


def check_text_fits(attributor: Any, probe: ProbeSet) -> int:
    """Check the token ids against the vocabulary and run the first text sample through the model,
    its embedding layer replaced: the number of classes."""
    text = attributor.text
    vocabulary = text.embedding.num_embeddings
    largest = max([int(probe.inputs.max()), *text.substitutes.values()])
    if largest >= vocabulary:
        raise ProbeError(
            f"token id {largest} is out of the embedding's vocabulary of {vocabulary} (ids 0 to "
            f"{vocabulary - 1}); the probe's input_ids and text.*_token_id must come from this model's "
            "tokenizer"
        )
    handle, x = text.batch(attributor.handle, np.asarray(probe.inputs[:1]), 0)
    try:
        with torch.no_grad():
            scores = handle.scores(x)
    except ModelError:
        raise
    except Exception as exc:
        takes = "token ids of shape (batch, length)" + (" and attention_mask" if handle.with_mask else "")
        raise ModelError(
            f"the model failed on the first text sample ({type(exc).__name__}: {exc}); a text model to "
            f"audit takes {takes} and returns class scores"
        ) from exc
    return int(scores.shape[1])
