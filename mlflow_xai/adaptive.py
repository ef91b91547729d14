"""Path integrals for Integrated Gradients, and the adaptive rule that proves its own accuracy.

The adaptive rule integrates on nested trapezoid grids: 2^k intervals, so doubling the intervals
keeps every old node and adds only the new midpoints. Each sample is refined until two checks hold
at once:

* completeness: ``|sum(a) - (F(x) - F(x'))| / |F(x) - F(x')|`` within ``completeness_tolerance``;
* step change: ``||a_2n - a_n|| / ||a_2n||`` within ``step_change_tolerance``, which compares the
  attributions themselves (a small completeness error alone can hide errors that cancel in the sum).

Only the samples that have not yet met both are refined, and every gradient evaluated is reused.
On ReLU networks the integrand is piecewise constant along the path, so no rule beats O(1/n) there;
what pays is spending the steps only on the samples whose paths need them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mlflow_xai.quadrature import nested_trapezoid_intervals

ExplainedOutput = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def path_gradient_sum(
    f: ExplainedOutput,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    nodes: torch.Tensor,
    weights: torch.Tensor,
    internal_batch_size: int,
) -> torch.Tensor:
    """sum_k w_k * dF/dx at x' + a_k (x - x'), per sample: shape of ``x``.

    The (node, sample) pairs are flattened and evaluated ``internal_batch_size`` at a time, so one
    forward/backward pass is as full as the budget allows whatever the batch and step counts.
    """
    batch = x.shape[0]
    delta = x - baseline
    grad_sum = torch.zeros_like(x)
    total = nodes.numel() * batch
    for start in range(0, total, internal_batch_size):
        pair = torch.arange(start, min(start + internal_batch_size, total), device=x.device)
        k, b = pair // batch, pair % batch
        alpha = nodes[k].view(-1, *([1] * (x.ndim - 1)))
        points = (baseline[b] + alpha * delta[b]).requires_grad_(True)
        (grads,) = torch.autograd.grad(f(points, target[b]).sum(), points)
        grad_sum.index_add_(0, b, grads * weights[k].view_as(alpha))
    return grad_sum


# --------------------------------------------------------------------------------------------------
# Convergence measures: pure functions on per-sample tensors


def step_change_rel_l2(coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    """||fine - coarse|| / ||fine|| per sample (float64, shape (B,)); 0/0 is 0, x/0 is inf."""
    diff = (fine.double() - coarse.double()).flatten(1).norm(dim=1)
    size = fine.double().flatten(1).norm(dim=1)
    ratio = diff / size
    return torch.where(diff == 0, torch.zeros_like(ratio), ratio)


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 0..D-1 along dim 1, ties sharing the mean of their positions (as Spearman needs)."""
    rows, width = values.shape
    sorted_values, order = values.sort(dim=1)
    position = torch.arange(width, device=values.device).expand(rows, width)
    starts_group = torch.ones_like(sorted_values, dtype=torch.bool)
    starts_group[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    first = torch.where(starts_group, position, torch.zeros_like(position)).cummax(dim=1).values
    ends_group = torch.ones_like(starts_group)
    ends_group[:, :-1] = starts_group[:, 1:]
    last_flipped = torch.where(ends_group, position, torch.full_like(position, width)).flip(1)
    last = last_flipped.cummin(dim=1).values.flip(1)
    ranks = torch.empty(rows, width, dtype=torch.float64, device=values.device)
    ranks.scatter_(1, order, (first + last).double() / 2.0)
    return ranks


def spearman_rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rho between ``a[i]`` and ``b[i]`` over features, per sample (float64, (B,)).

    NaN where either sample's attributions are all equal (no ranking to compare).
    """
    ra = _average_ranks(a.flatten(1))
    rb = _average_ranks(b.flatten(1))
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    return (ra * rb).sum(dim=1) / (ra.norm(dim=1) * rb.norm(dim=1))


def completeness_rel_error(
    attributions: torch.Tensor, output_gap: torch.Tensor, gap_floor: float = 1e-6
) -> torch.Tensor:
    """|sum(a) - (F(x) - F(x'))| / max(|F(x) - F(x')|, gap_floor) per sample (float64, (B,)).

    The floor keeps a near-degenerate baseline from demanding an impossible relative accuracy: there
    the error is judged against ``gap_floor`` instead, i.e. in absolute terms.
    """
    total = attributions.double().flatten(1).sum(dim=1)
    gap = output_gap.double()
    return (total - gap).abs() / gap.abs().clamp_min(gap_floor)


# --------------------------------------------------------------------------------------------------
# Adaptive Integrated Gradients


@dataclass
class AdaptiveIGResult:
    """Attributions with the evidence of their accuracy, one entry per sample."""

    attributions: torch.Tensor  # shape of x: the estimate on the finest grid each sample reached
    steps: torch.Tensor  # (B,) int64: gradient evaluations spent on the sample (2^k + 1)
    step_change_rel_l2: torch.Tensor  # (B,) float64: ||a_2n - a_n|| / ||a_2n|| at the last check
    step_change_spearman: torch.Tensor  # (B,) float64: rank correlation of a_n and a_2n
    completeness_rel_error: torch.Tensor  # (B,) float64, of the returned attributions
    converged: torch.Tensor  # (B,) bool: both tolerances met before max_steps
    output_gap: torch.Tensor  # (B,) F(x) - F(x')


def adaptive_integrated_gradients(
    f: ExplainedOutput,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    *,
    completeness_tolerance: float = 0.01,
    step_change_tolerance: float = 0.02,
    min_steps: int = 8,
    max_steps: int = 513,
    internal_batch_size: int = 512,
    gap_floor: float = 1e-6,
) -> AdaptiveIGResult:
    """IG by trapezoid on 2^k intervals, refined per sample until both tolerances hold.

    The first check compares the grids of m and 2m intervals, with m the smallest power of two such
    that 2m + 1 >= ``min_steps``; refinement stops at the finest grid whose node count does not
    exceed ``max_steps``. A sample that meets both tolerances keeps the finer of its last two
    estimates; one that reaches ``max_steps`` first is returned as it is, marked not converged.
    """
    intervals, max_intervals = nested_trapezoid_intervals(min_steps, max_steps)
    batch = x.shape[0]
    baseline = baseline.expand_as(x)
    delta = x - baseline
    with torch.no_grad():
        output_gap = f(x, target).double() - f(baseline, target).double()

    def gradient_sum(rows: torch.Tensor, alphas: torch.Tensor, weight: float) -> torch.Tensor:
        nodes = alphas.to(dtype=x.dtype, device=x.device)
        weights = torch.full_like(nodes, weight)
        return path_gradient_sum(
            f, x[rows], baseline[rows], target[rows], nodes, weights, internal_batch_size
        )

    everyone = torch.arange(batch, device=x.device)
    # Trapezoid on m intervals: (ends / 2 + interior) / m, with `ends` already halved.
    ends = gradient_sum(everyone, torch.tensor([0.0, 1.0], dtype=torch.float64), 0.5)
    interior = torch.zeros_like(x)
    if intervals > 1:
        inner_nodes = torch.arange(1, intervals, dtype=torch.float64) / intervals
        interior = gradient_sum(everyone, inner_nodes, 1.0)

    attributions = torch.zeros_like(x)
    previous = torch.zeros_like(x)
    steps = torch.zeros(batch, dtype=torch.int64, device=x.device)
    change = torch.full((batch,), float("nan"), dtype=torch.float64, device=x.device)
    completeness = torch.full_like(change, float("nan"))
    converged = torch.zeros(batch, dtype=torch.bool, device=x.device)

    active = everyone
    coarse = delta * (ends + interior) / intervals
    while len(active):
        midpoints = (2 * torch.arange(intervals, dtype=torch.float64) + 1) / (2 * intervals)
        interior[active] += gradient_sum(active, midpoints, 1.0)
        intervals *= 2
        fine = delta[active] * (ends[active] + interior[active]) / intervals

        change_now = step_change_rel_l2(coarse, fine)
        completeness_now = completeness_rel_error(fine, output_gap[active], gap_floor)
        met = (change_now <= step_change_tolerance) & (completeness_now <= completeness_tolerance)
        attributions[active] = fine
        previous[active] = coarse
        steps[active] = intervals + 1
        change[active] = change_now
        completeness[active] = completeness_now
        converged[active] = met

        keep = ~met if 2 * intervals <= max_intervals else torch.zeros_like(met)
        active, coarse = active[keep], fine[keep]

    return AdaptiveIGResult(
        attributions=attributions,
        steps=steps,
        step_change_rel_l2=change,
        step_change_spearman=spearman_rank_correlation(previous, attributions),
        completeness_rel_error=completeness,
        converged=converged,
        output_gap=output_gap,
    )
