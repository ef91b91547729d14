"""Text probes: the tokens as text, and each sample's top tokens for ``per_sample.csv``."""

from __future__ import annotations

import numpy as np

from mlflow_xai.probe.probe_set import ProbeSet

TOP_TOKENS = 5  # tokens listed per sample in per_sample.csv


def token_text(probe: ProbeSet) -> np.ndarray:
    """(N, L) the tokens as text: the probe's ``tokens``, else ``#<id>``."""
    if probe.tokens is not None:
        return probe.tokens
    return np.char.add("#", probe.inputs.astype(str))


def top_tokens(tokens: np.ndarray, scores: np.ndarray, kept: np.ndarray, k: int = TOP_TOKENS) -> str:
    """The ``k`` tokens with the largest scores, special tokens and padding (``kept``) left out:
    ``great (+0.41); film (+0.12); ...``."""
    ranked = np.flatnonzero(~kept)
    order = ranked[np.argsort(-scores[ranked], kind="stable")][:k]
    return "; ".join(f"{tokens[i]} ({scores[i]:+.3g})" for i in order)
