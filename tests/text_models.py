"""Small text models and probes the text tests share (imported as ``from text_models import ...``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

VOCAB, HIDDEN, CLASSES, PAD, CLS = 30, 6, 3, 0, 1


class Bag(nn.Module):
    """F = w . mean over real tokens of E[ids] + b: an embedding-bag classifier over token ids."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, HIDDEN)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        e = self.emb(ids)
        if attention_mask is None:
            return self.head(e.mean(dim=1))
        m = attention_mask.unsqueeze(-1).to(e.dtype)
        return self.head((e * m).sum(dim=1) / m.sum(dim=1))


def _ids(n: int = 6, length: int = 7, seed: int = 0) -> np.ndarray:
    ids = np.random.default_rng(seed).integers(2, VOCAB, size=(n, length))
    ids[:, 0] = CLS
    return ids


def _contributions(bag: Bag, ids: np.ndarray, target: int) -> np.ndarray:
    E, w = bag.emb.weight.detach().numpy(), bag.head.weight.detach().numpy()[target]
    return (E[ids] @ w) / ids.shape[1]


def _lig(**options) -> dict:
    """An audit config of layer_integrated_gradients with ``options``, masks kept in float32."""
    return {"methods": {"layer_integrated_gradients": options}, "artifacts": {"mask_dtype": "float32"}}
