"""Text classifiers: token ids in, class scores out, explained through the embedding layer.

Gradients cannot flow into integer token ids, so a text model is explained in the space of its
embedding layer's output: the engine looks the tokens up once (``TextHandle.embed``), methods move
along paths in that space, and every forward pass runs the model on the sample's own token ids with
the embedding layer's output replaced by the point (a forward hook). The attention mask, the token
type ids and the positions stay the sample's own, whatever the point.

A point carries the row of its sample in the batch as one extra feature after the hidden ones:
``(L, H + 1)``. Methods expand, chunk and mix a batch's points freely (IG evaluates node-major
blocks or flattened (node, sample) pairs); the extra feature tells the handle whose token ids go
with each point. It is the same in a point and in its baseline, so an attribution to it is zero and
the per-token score, the sum over the hidden features, is unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from mlflow_xai.errors import ModelError
from mlflow_xai.model.handle import ModelHandle


def find_embedding(model: nn.Module, name: str | None = None) -> nn.Embedding:
    """The token embedding layer: the one named, else ``get_input_embeddings()`` (Hugging Face
    models), else the model's only ``nn.Embedding``."""
    if name is not None:
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            layer = None
        if not isinstance(layer, nn.Embedding):
            raise ModelError(
                f"text.embedding_layer {name!r} is not an nn.Embedding of the model; its embeddings: "
                f"{_embeddings(model) or 'none'}"
            )
        return layer
    getter = getattr(model, "get_input_embeddings", None)
    if callable(getter):
        layer = getter()
        if isinstance(layer, nn.Embedding):
            return layer
    found = _embeddings(model)
    if len(found) == 1:
        return model.get_submodule(found[0])
    if not found:
        raise ModelError(
            "a text probe is explained through the model's token embedding layer, but the model has "
            "no nn.Embedding (an nn.EmbeddingBag pools the tokens and cannot be explained per token)"
        )
    raise ModelError(
        f"the model has {len(found)} embedding layers ({', '.join(found)}); name the token embedding "
        "in the config: text: {embedding_layer: <name>}"
    )


def _embeddings(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Embedding)]


def takes_argument(model: nn.Module, name: str) -> bool:
    """Whether the model's forward accepts ``name`` (by name, or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def takes_attention_mask(model: nn.Module) -> bool:
    """Whether the model's forward accepts ``attention_mask``."""
    return takes_argument(model, "attention_mask")


@dataclass
class TextHandle:
    """A ``ModelHandle`` for token ids: ``scores`` and ``explained`` take points in the embedding
    space of one batch (``embed``), each carrying its sample's row (see the module docstring)."""

    base: ModelHandle
    embedding: nn.Embedding
    ids: torch.Tensor  # (B, L) int64: the batch's token ids
    attention_mask: torch.Tensor  # (B, L) int64
    with_mask: bool  # the model's forward takes attention_mask
    token_type_ids: torch.Tensor | None = None  # (B, L) int64, passed when the probe has them

    @property
    def module(self) -> nn.Module:
        return self.base.module

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def exported(self) -> bool:
        return False

    @property
    def hidden(self) -> int:
        return int(self.embedding.embedding_dim)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L, H + 1): the embeddings of ``ids`` (one per row of the batch), each row's index last."""
        with torch.no_grad():
            vectors = self.embedding(ids.to(self.device))
        rows = torch.arange(len(ids), device=self.device, dtype=vectors.dtype)
        index = rows.view(-1, 1, 1).expand(len(ids), ids.shape[1], 1)
        return torch.cat([vectors, index], dim=2)

    def scores(self, points: torch.Tensor) -> torch.Tensor:
        """Class scores of the model run on each point's sample with its embeddings replaced."""
        rows = points[:, 0, -1].detach().round().long()
        vectors = points[..., :-1]
        with _replaced(self.embedding, vectors):
            types = None if self.token_type_ids is None else self.token_type_ids[rows]
            raw = self._run(self.ids[rows], self.attention_mask[rows], types)
        return self.base.finish(raw.to(vectors.dtype))

    def scores_of_ids(
        self, ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class scores of the model run on token ids as they are (no embedding replaced)."""
        return self.base.finish(self._run(ids, attention_mask, token_type_ids))

    def _run(
        self, ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        if self.with_mask:
            extra["attention_mask"] = attention_mask
        raw = self.module(ids, **extra)
        if self.base.output_key is None and not isinstance(raw, torch.Tensor) and hasattr(raw, "logits"):
            raw = raw.logits  # a Hugging Face model's output
        return self.base.select(raw)

    def explained(self, points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.scores(points).gather(1, target.view(-1, 1)).squeeze(1)


@contextmanager
def _replaced(layer: nn.Module, output: torch.Tensor) -> Iterator[None]:
    """Within the block, ``layer`` returns ``output`` whatever its input."""

    def hook(module: nn.Module, inputs: object, result: torch.Tensor) -> torch.Tensor:
        if result.shape != output.shape:
            raise ModelError(
                f"the embedding layer gave {tuple(result.shape)} where {tuple(output.shape)} was "
                "expected; is text.embedding_layer the model's token embedding?"
            )
        return output.to(result.dtype)

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def model_token_ids(model: nn.Module) -> dict[str, int]:
    """The token ids a Hugging Face model's config names (``pad_token_id``, ``bos_token_id``, ...)."""
    config = getattr(model, "config", None)
    out = {}
    for key in ("pad_token_id", "mask_token_id", "unk_token_id", "bos_token_id", "eos_token_id",
                "sep_token_id", "cls_token_id"):  # fmt: skip
        value = getattr(config, key, None)
        if isinstance(value, int) and value >= 0:
            out[key] = value
    return out


@dataclass
class TextInputs:
    """A text probe's side of an audit: the attention mask of every sample, the embedding layer,
    the tokens a baseline keeps and the token ids it substitutes."""

    attention_mask: np.ndarray  # (N, L) of the whole probe set
    embedding: nn.Embedding
    with_mask: bool
    special_ids: tuple[int, ...]
    substitutes: dict[str, int]  # baseline kind (pad, mask, unk) -> token id
    token_type_ids: np.ndarray | None = None  # (N, L), when the probe has them and the model takes them

    def batch(self, base: ModelHandle, ids: np.ndarray, start: int) -> tuple[TextHandle, torch.Tensor]:
        """The handle of one batch of token ids at ``start`` in the probe set, and its embedded points."""
        token_ids = torch.as_tensor(ids, dtype=torch.int64, device=base.device)
        mask = torch.as_tensor(self.attention_mask[start : start + len(ids)], device=base.device)
        types = None
        if self.token_type_ids is not None:
            types = torch.as_tensor(self.token_type_ids[start : start + len(ids)], device=base.device)
        handle = TextHandle(base, self.embedding, token_ids, mask, self.with_mask, types)
        return handle, handle.embed(token_ids)

    def kept(self, handle: TextHandle) -> torch.Tensor:
        """(B, L) bool: the tokens a baseline keeps: special tokens and padding."""
        special = torch.as_tensor(self.special_ids, dtype=torch.int64, device=handle.device)
        return torch.isin(handle.ids, special) | (handle.attention_mask == 0)

    def baseline(self, handle: TextHandle, kind: str) -> torch.Tensor:
        """The batch's baseline points: kept tokens as they are, every other one replaced by the
        ``kind`` token (pad, mask, unk) or by a zero embedding (zero)."""
        kept = self.kept(handle)
        if kind == "zero":
            points = handle.embed(handle.ids)
            points[..., :-1] = torch.where(kept.unsqueeze(-1), points[..., :-1], 0.0)
            return points
        return handle.embed(torch.where(kept, handle.ids, self.substitutes[kind]))
