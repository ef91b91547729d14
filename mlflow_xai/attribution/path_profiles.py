"""What Integrated Gradients sees along its path, for the first samples: F, |dF/dx| and the
completeness error of every nested trapezoid grid, from one walk over the finest grid.

``artifacts.ig_figures`` draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

from mlflow_xai.attribution.adaptive import ExplainedOutput
from mlflow_xai.checks.completeness import completeness_error

matplotlib.use("Agg")  # figures are files; never open a window
import numpy as np  # noqa: E402
import torch  # noqa: E402


@dataclass(frozen=True)
class IGPathProfiles:
    """Per-sample quantities along the IG path, as numpy arrays (S samples, A nodes, L grids)."""

    ids: list[str]
    alphas: np.ndarray  # (A,) the nodes j / 2^K of the finest grid
    outputs: np.ndarray  # (S, A) F along the path
    grad_magnitude: np.ndarray  # (S, A) mean |dF/dx| over the input's features
    steps: np.ndarray  # (L,) gradient evaluations of each nested grid: 3, 5, 9, ..., 2^K + 1
    completeness_rel_error: np.ndarray  # (S, L) of trapezoid IG on each grid
    seconds: float = 0.0  # time spent evaluating the path for the figures


def ig_path_profiles(
    f: ExplainedOutput,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    *,
    ids: Sequence[str] | None = None,
    max_steps: int = 257,
    internal_batch_size: int = 512,
    degenerate_floor: float = 1e-6,
) -> IGPathProfiles:
    """Evaluate F and its gradient at the 2^K + 1 nodes of the finest grid (2^K + 1 <= max_steps).

    Completeness errors follow ``mlflow_xai.checks.completeness_error`` (NaN for a degenerate
    baseline), as the check and adaptive IG judge them."""
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 3:
        raise ValueError(f"max_steps must be an integer >= 3, got {max_steps!r}")
    intervals = 2
    while 2 * intervals + 1 <= max_steps:
        intervals *= 2
    batch = x.shape[0]
    baseline = baseline.expand_as(x)
    delta = x - baseline
    alphas = torch.arange(intervals + 1, dtype=torch.float64) / intervals
    outputs = torch.empty(batch, intervals + 1, dtype=torch.float64)
    grad_magnitude = torch.empty_like(outputs)
    contribution = torch.empty_like(outputs)  # sum_i delta_i * dF/dx_i at each node
    total = (intervals + 1) * batch
    for start in range(0, total, internal_batch_size):
        pair = torch.arange(start, min(start + internal_batch_size, total))
        k, b = pair // batch, pair % batch
        alpha = alphas[k].to(x.dtype).view(-1, *([1] * (x.ndim - 1))).to(x.device)
        points = (baseline[b] + alpha * delta[b]).requires_grad_(True)
        values = f(points, target[b])
        (grads,) = torch.autograd.grad(values.sum(), points)
        outputs[b, k] = values.detach().double().cpu()
        grad_magnitude[b, k] = grads.abs().flatten(1).mean(dim=1).double().cpu()
        contribution[b, k] = (grads * delta[b]).flatten(1).sum(dim=1).double().cpu()

    eps = torch.finfo(x.dtype).eps  # the outputs were computed in the inputs' dtype
    levels, errors = [], []
    grid = 2
    while grid <= intervals:
        stride = intervals // grid
        weights = torch.full((grid + 1,), 1.0 / grid, dtype=torch.float64)
        weights[[0, -1]] *= 0.5
        attribution_sum = contribution[:, ::stride] @ weights
        error, _ = completeness_error(
            attribution_sum, outputs[:, -1], outputs[:, 0], degenerate_floor=degenerate_floor, eps=eps
        )
        errors.append(error.numpy())
        levels.append(grid + 1)
        grid *= 2
    names = [str(i) for i in range(batch)] if ids is None else [str(i) for i in ids]
    if len(names) != batch:
        raise ValueError(f"ids must name each of the {batch} samples, got {len(names)}")
    return IGPathProfiles(
        ids=names,
        alphas=alphas.numpy(),
        outputs=outputs.numpy(),
        grad_magnitude=grad_magnitude.numpy(),
        steps=np.array(levels),
        completeness_rel_error=np.stack(errors, axis=1),
    )
