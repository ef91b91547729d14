"""Drift of attributions against a baseline (champion) model: rank correlation and top-k overlap
per sample."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def attribution_drift(
    candidate: np.ndarray,
    baseline: np.ndarray,
    *,
    top_fraction: float = 0.1,
    rankable: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per sample: Spearman rank correlation of |attribution| and overlap of the top features.

    ``top_fraction`` of the features with the largest |attribution| in each map are compared;
    the overlap is |top(candidate) & top(baseline)| / k, 1.0 for identical rankings. ``rankable``
    (the maps' shape, bool) limits each sample to its rankable features (text: not special tokens,
    not padding); a sample then compares only those.
    """
    import torch

    from mlflow_xai.checks.convergence import spearman_rank_correlation

    if candidate.shape != baseline.shape:
        raise ValueError(f"attribution shapes differ: {candidate.shape} vs {baseline.shape}")
    if rankable is not None:
        rows = [
            attribution_drift(c[r][None], b[r][None], top_fraction=top_fraction)
            for c, b, r in zip(candidate, baseline, rankable.astype(bool), strict=True)
        ]
        return {key: np.concatenate([row[key] for row in rows]) for key in rows[0]}
    a = np.abs(candidate.reshape(len(candidate), -1).astype(np.float64))
    b = np.abs(baseline.reshape(len(baseline), -1).astype(np.float64))
    rho = spearman_rank_correlation(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    k = max(1, int(round(top_fraction * a.shape[1])))
    top_a = np.argpartition(-a, k - 1, axis=1)[:, :k]
    top_b = np.argpartition(-b, k - 1, axis=1)[:, :k]
    overlap = np.array([len(np.intersect1d(x, y)) / k for x, y in zip(top_a, top_b, strict=True)])
    return {"drift_rank_correlation": rho, "drift_topk_overlap": overlap}


def drift_metrics(per_sample: Mapping[str, np.ndarray], method: str) -> dict[str, float]:
    out = {}
    for key, values in per_sample.items():
        finite = values[np.isfinite(values)]
        if len(finite):
            out[f"xai/{method}/{key}_median"] = float(np.median(finite))
            out[f"xai/{method}/{key}_min"] = float(finite.min())
    return out
