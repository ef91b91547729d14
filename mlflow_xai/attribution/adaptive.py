"""Path integrals for Integrated Gradients, and the adaptive rule that proves its own accuracy.

The adaptive rule integrates each sample's path by the composite trapezoid rule on a partition it
refines where the integrand changes. Every interval has its ends and its midpoint evaluated, so it
carries two estimates (trapezoid on the interval, and on its two halves); their difference over
the whole path is the step change. Each sample is refined until two checks hold at once:

* completeness: ``|sum(a) - (F(x) - F(x'))| / |F(x) - F(x')|`` within ``completeness_tolerance``
  (beyond the outputs' rounding, as ``mlflow_xai.checks`` defines it);
* step change: ``||a_fine - a_coarse|| / ||a_fine||`` within ``step_change_tolerance``, which
  compares the attributions themselves (a small completeness error alone can hide errors that
  cancel in the sum). On equal intervals this is exactly the n vs 2n comparison.

Only the samples that have not yet met both are refined, only in the intervals that carry most of
their step change, and every gradient evaluated is reused. On ReLU networks the integrand is
piecewise constant along the path, so no rule beats O(1/n) there; what pays is spending the
evaluations on the samples, and the stretches of their paths, that need them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from mlflow_xai.attribution.quadrature import nested_trapezoid_intervals
from mlflow_xai.checks.completeness import completeness_error
from mlflow_xai.checks.convergence import spearman_rank_correlation, step_change_rel_l2

ExplainedOutput = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------------
# Adaptive Integrated Gradients

#: Share of a sample's squared local error indicators that one round of refinement must cover
#: (Dörfler marking). Gradient evaluations for the 256 probe samples of benchmarks/adaptive_ig.py
#: (16 first intervals, ends evaluated at 0 and 1): 14,462 at 0.1, 14,738 at 0.2, 15,038 at 0.3,
#: 15,836 at 0.5. Smaller shares come closer to splitting the worst interval one at a time, in
#: more rounds of smaller passes (17.6 rounds a batch of 32 at 0.1, 10.1 at 0.2, 7.5 at 0.3):
#: equal wall time on a CPU, more launches on a GPU. benchmarks/adaptive_accuracy.py shows the
#: share does not change accuracy.
MARKING_FRACTION = 0.1

#: The path's two ends are evaluated this far inside it (alpha = 2^-16 and 1 - 2^-16), where the
#: integrand takes its one-sided limits. The integral does not see one point, but a trapezoid
#: weighs it by h/2, and the baseline itself is often a degenerate point: from a zero (or any
#: constant) image every max-pool window is a tie and every ReLU sits at its bias. On the demo CNN
#: that point alone cost 8% of the evaluations (14,462 against 13,314 in benchmarks/adaptive_ig.py),
#: spent halving the first interval until its weight stopped mattering. 2^-16 is 1/128 of the
#: finest interval at the default max_steps, and large enough that x' + alpha (x - x') differs
#: from x' in float32 wherever |x - x'| > 2^-8 |x'|. In float16 and bfloat16 it can round away
#: (1 - 2^-16 is 1 there, and small steps from a nonzero baseline vanish): those ends are then
#: evaluated at the ends themselves.
ENDPOINT_OFFSET = 2.0**-16


@dataclass
class AdaptiveIGResult:
    """Attributions with the evidence of their accuracy, one entry per sample."""

    attributions: torch.Tensor  # shape of x: the estimate on the finest partition each sample reached
    steps: torch.Tensor  # (B,) int64: gradient evaluations spent on the sample (always odd)
    step_change_rel_l2: torch.Tensor  # (B,) float64: ||a_fine - a_coarse|| / ||a_fine|| at the last check
    step_change_spearman: torch.Tensor  # (B,) float64: rank correlation of a_coarse and a_fine
    completeness_rel_error: torch.Tensor  # (B,) float64, of the returned attributions; NaN if degenerate
    converged: torch.Tensor  # (B,) bool: both tolerances met within max_steps
    output_at_input: torch.Tensor  # (B,) F(x), in the output's dtype
    output_at_baseline: torch.Tensor  # (B,) F(x')

    @property
    def output_gap(self) -> torch.Tensor:
        """F(x) - F(x') per sample, float64."""
        return self.output_at_input.double() - self.output_at_baseline.double()


class _Partition:
    """Every sample's path cut into intervals ("leaves") on a dyadic grid of ``finest`` units.

    Each leaf [lo, hi] has its two ends and its midpoint evaluated, which gives two trapezoid
    estimates of its share of the integral: ``coarse`` on the whole leaf and ``fine`` on its two
    halves. Their difference is the leaf's error indicator. Node values are stored as attribution
    densities ``(x - x') * dF/dx`` (in the input's dtype) and the estimates as float64 running sums
    per sample, so splitting a leaf only evaluates its two new quarter points.
    """

    def __init__(self, x: torch.Tensor, finest: int) -> None:
        self.finest = finest
        self.width = x[0].numel()
        self.values = torch.empty(0, self.width, dtype=x.dtype, device=x.device)  # rows: nodes
        self.used = 0  # rows of `values` holding nodes; the rest is room to grow into
        self.node_count = torch.zeros(x.shape[0], dtype=torch.int64)
        # Leaves: sample, lo, hi (grid units) and the node rows of lo, mid, hi; and the squared
        # norm of each leaf's fine - coarse (its error indicator), kept on the CPU.
        self.leaves = torch.empty(0, 6, dtype=torch.int64)
        self.indicator = torch.empty(0, dtype=torch.float64)
        self.fine = torch.zeros(x.shape[0], self.width, dtype=torch.float64, device=x.device)
        self.coarse = torch.zeros_like(self.fine)

    def add_nodes(self, samples: torch.Tensor, chunks: Iterable[torch.Tensor]) -> torch.Tensor:
        """Store the node values ``chunks`` yields, one row per entry of ``samples``; their rows."""
        count = len(samples)
        first = self.used
        if first + count > len(self.values):  # grow by doubling: few copies in all
            grown = self.values.new_empty(max(first + count, 2 * len(self.values)), self.width)
            grown[:first] = self.values[:first]
            self.values = grown
        for chunk in chunks:
            self.values[self.used : self.used + len(chunk)] = chunk.flatten(1)
            self.used += len(chunk)
        if self.used != first + count:
            raise RuntimeError(f"expected {count} node values, got {self.used - first}")
        self.node_count += torch.bincount(samples, minlength=len(self.node_count))
        return torch.arange(first, first + count)

    def add_leaves(self, leaves: torch.Tensor) -> None:
        """Add the first partition's leaves, their ends and midpoints already evaluated."""
        values = self.values
        h = ((leaves[:, 2] - leaves[:, 1]).to(values.dtype) / self.finest).to(values.device).view(-1, 1)
        ends = values[leaves[:, 3]] + values[leaves[:, 5]]
        coarse = ends * (h / 2)
        difference = (2 * values[leaves[:, 4]] - ends) * (h / 4)
        samples = leaves[:, 0].to(values.device)
        self.coarse.index_add_(0, samples, coarse.double())
        self.fine.index_add_(0, samples, (coarse + difference).double())
        self.leaves = torch.cat([self.leaves, leaves])
        self.indicator = torch.cat([self.indicator, difference.square().sum(dim=1).double().cpu()])

    def split(
        self, marked: torch.Tensor, densities: Callable[[torch.Tensor, torch.Tensor], Iterable[torch.Tensor]]
    ) -> None:
        """Halve the marked leaves: evaluate their quarter points and swap each leaf's estimates for
        its halves'. On the sums that is: ``coarse`` gains the leaf's fine - coarse, and ``fine``
        gains the fine - coarse of both halves."""
        parents = self.leaves[marked]
        sample, lo, hi = parents[:, 0], parents[:, 1], parents[:, 2]
        mid = (lo + hi) // 2
        quarters = torch.stack([(lo + mid) // 2, (mid + hi) // 2], dim=1).flatten()
        pairs = sample.repeat_interleave(2)
        rows = self.add_nodes(pairs, densities(pairs, quarters)).view(-1, 2)
        values = self.values
        at_lo, at_mid, at_hi = values[parents[:, 3]], values[parents[:, 4]], values[parents[:, 5]]
        h = ((hi - lo).to(values.dtype) / self.finest).to(values.device).view(-1, 1)
        left = (2 * values[rows[:, 0]] - at_lo - at_mid) * (h / 8)
        right = (2 * values[rows[:, 1]] - at_mid - at_hi) * (h / 8)
        owner = sample.to(values.device)
        self.coarse.index_add_(0, owner, ((2 * at_mid - at_lo - at_hi) * (h / 4)).double())
        self.fine.index_add_(0, owner, (left + right).double())
        left_leaves = torch.stack([sample, lo, mid, parents[:, 3], rows[:, 0], parents[:, 4]], dim=1)
        right_leaves = torch.stack([sample, mid, hi, parents[:, 4], rows[:, 1], parents[:, 5]], dim=1)
        self.leaves = torch.cat([self.leaves[~marked], left_leaves, right_leaves])
        self.indicator = torch.cat(
            [
                self.indicator[~marked],
                left.square().sum(dim=1).double().cpu(),
                right.square().sum(dim=1).double().cpu(),
            ]
        )


def _mark(partition: _Partition, active: torch.Tensor) -> torch.Tensor:
    """Leaves to split: per active sample, the fewest with the largest indicators whose squares sum
    to MARKING_FRACTION of the total over its splittable ones. If no interval of the sample shows
    any difference yet a tolerance fails, every splittable interval is halved; if the difference
    sits only in intervals already at the finest grid, the sample is done.

    No budget is needed: every node is a distinct point of the finest grid, which has
    ``finest + 1 <= max_steps`` points, so no sample can pass max_steps evaluations."""
    leaves, indicator = partition.leaves, partition.indicator
    batch = len(partition.node_count)
    sample = leaves[:, 0]
    is_active = torch.zeros(batch, dtype=torch.bool)
    is_active[active] = True
    marked = torch.zeros(len(leaves), dtype=torch.bool)
    candidates = torch.nonzero(is_active[sample] & (leaves[:, 2] - leaves[:, 1] >= 4)).squeeze(1)
    if len(candidates) == 0:
        return marked
    # Candidates grouped by sample, largest indicator first within a group.
    order = indicator[candidates].argsort(descending=True, stable=True)
    order = order[sample[candidates][order].argsort(stable=True)]
    candidates = candidates[order]
    values, owner = indicator[candidates], sample[candidates]
    counts = torch.bincount(owner, minlength=batch)
    rank = torch.arange(len(candidates)) - (counts.cumsum(0) - counts)[owner]
    # The sum of the larger indicators of the same sample, summed per sample (a running sum over
    # all samples would carry one sample's NaN or magnitude into the next).
    table = torch.zeros(batch, int(counts.max()), dtype=torch.float64)
    table[owner, rank] = values
    before = (table.cumsum(1) - table)[owner, rank]
    total = table.sum(1)[owner]
    all_total = torch.zeros(batch, dtype=torch.float64).index_add_(0, sample, indicator)[owner]
    chosen = torch.where(total > 0, before < MARKING_FRACTION * total, all_total == 0)
    marked[candidates[chosen]] = True
    return marked


def adaptive_integrated_gradients(
    f: ExplainedOutput,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    *,
    completeness_tolerance: float = 0.01,
    step_change_tolerance: float = 0.02,
    min_steps: int = 33,
    max_steps: int = 513,
    internal_batch_size: int = 512,
    degenerate_floor: float = 1e-6,
    node_memory: int = 2 << 30,
) -> AdaptiveIGResult:
    """IG by composite trapezoid on a partition of the path refined per sample, where it is needed.

    Every sample starts with m equal intervals and their midpoints (2m + 1 evaluations), with m the
    smallest power of two such that 2m + 1 >= ``min_steps``. ``coarse`` integrates on the intervals,
    ``fine`` on their halves; the step change is ``||fine - coarse|| / ||fine||``. Until both
    tolerances hold, the intervals that carry most of the difference are halved (each split costs
    two evaluations at its quarter points), never below ``1/finest`` of the path, with ``finest``
    the largest power of two such that finest + 1 <= ``max_steps``, and never past ``max_steps``
    evaluations. A sample that meets both tolerances returns ``fine``; one that runs out of budget
    returns its ``fine`` marked not converged. Completeness is judged as the check judges it
    (``mlflow_xai.checks.completeness_error``, with ``degenerate_floor``): a sample whose baseline is
    degenerate converges on its step change alone.

    Every evaluated gradient is kept until its group of samples is done, so samples are taken in
    groups whose nodes fit ``node_memory`` bytes even if each used ``max_steps``: one group for small inputs,
    a few samples at a time for large images. Samples are independent, so grouping changes nothing
    but the size of the passes.
    """
    first, finest = nested_trapezoid_intervals(min_steps, max_steps)
    batch = x.shape[0]
    baseline = baseline.expand_as(x)
    group = max(1, node_memory // (max_steps * x[0].numel() * x.element_size()))
    if batch > group:
        settings = {
            "completeness_tolerance": completeness_tolerance,
            "step_change_tolerance": step_change_tolerance,
            "min_steps": min_steps,
            "max_steps": max_steps,
            "internal_batch_size": internal_batch_size,
            "degenerate_floor": degenerate_floor,
            "node_memory": node_memory,
        }
        parts = [
            adaptive_integrated_gradients(f, x[rows], baseline[rows], target[rows], **settings)
            for rows in (slice(start, start + group) for start in range(0, batch, group))
        ]
        return AdaptiveIGResult(
            *(torch.cat([getattr(p, name) for p in parts]) for name in AdaptiveIGResult.__dataclass_fields__)
        )
    with torch.no_grad():
        at_input, at_baseline = f(x, target), f(baseline, target)
    densities = _path_densities(f, x, baseline, target, finest, internal_batch_size)
    partition = _first_partition(x, densities, first, finest)
    change, completeness, converged = _refine(
        partition,
        densities,
        at_input,
        at_baseline,
        completeness_tolerance=completeness_tolerance,
        step_change_tolerance=step_change_tolerance,
        degenerate_floor=degenerate_floor,
    )
    return AdaptiveIGResult(
        attributions=partition.fine.to(x.dtype).view_as(x),
        steps=partition.node_count.to(x.device),
        step_change_rel_l2=change,
        step_change_spearman=spearman_rank_correlation(partition.coarse, partition.fine),
        completeness_rel_error=completeness,
        converged=converged,
        output_at_input=at_input,
        output_at_baseline=at_baseline,
    )


Densities = Callable[[torch.Tensor, torch.Tensor], Iterator[torch.Tensor]]


def _path_densities(
    f: ExplainedOutput,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    finest: int,
    internal_batch_size: int,
) -> Densities:
    """``densities(samples, positions)``: (x - x') * dF/dx at (sample, grid position) pairs, one row
    each, in passes of ``internal_batch_size`` points; grid position j is alpha = j / finest."""
    delta = x - baseline

    def densities(samples: torch.Tensor, positions: torch.Tensor) -> Iterator[torch.Tensor]:
        samples_dev = samples.to(x.device)
        alphas = (positions.double() / finest).clamp(ENDPOINT_OFFSET, 1 - ENDPOINT_OFFSET)
        alphas = alphas.to(dtype=x.dtype, device=x.device)
        for start in range(0, len(samples), internal_batch_size):
            b = samples_dev[start : start + internal_batch_size]
            alpha = alphas[start : start + internal_batch_size].view(-1, *([1] * (x.ndim - 1)))
            step = delta[b]
            points = torch.addcmul(baseline[b], alpha, step).requires_grad_(True)
            (grads,) = torch.autograd.grad(f(points, target[b]).sum(), points)
            yield grads * step  # never in place: autograd may return an expanded gradient

    return densities


def _first_partition(x: torch.Tensor, densities: Densities, first: int, finest: int) -> _Partition:
    """Every sample's first partition: ``first`` intervals of ``finest // first`` grid units, each
    evaluated at both ends and its midpoint."""
    batch = x.shape[0]
    partition = _Partition(x, finest)
    unit = finest // first
    positions = torch.arange(0, finest + 1, unit // 2)
    samples = torch.arange(batch).repeat_interleave(len(positions))
    rows = partition.add_nodes(samples, densities(samples, positions.repeat(batch))).view(batch, -1)
    starts = torch.arange(first)
    lo_rows, mid_rows, hi_rows = rows[:, 2 * starts], rows[:, 2 * starts + 1], rows[:, 2 * starts + 2]
    partition.add_leaves(
        torch.stack(
            [
                torch.arange(batch).repeat_interleave(first),
                (starts * unit).repeat(batch),
                ((starts + 1) * unit).repeat(batch),
                lo_rows.flatten(),
                mid_rows.flatten(),
                hi_rows.flatten(),
            ],
            dim=1,
        )
    )
    return partition


def _refine(
    partition: _Partition,
    densities: Densities,
    at_input: torch.Tensor,
    at_baseline: torch.Tensor,
    *,
    completeness_tolerance: float,
    step_change_tolerance: float,
    degenerate_floor: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Halve the marked intervals of the samples not yet within both tolerances, until every sample
    is or none can be refined further. Returns each sample's step change, completeness error and
    whether it converged, as of its last check."""
    batch, device = len(at_input), at_input.device
    eps = torch.finfo(at_input.dtype).eps
    change = torch.full((batch,), float("nan"), dtype=torch.float64, device=device)
    completeness = torch.full_like(change, float("nan"))
    converged = torch.zeros(batch, dtype=torch.bool, device=device)
    active = torch.arange(batch)
    while len(active):
        fine, coarse = partition.fine[active], partition.coarse[active]
        change[active] = step_change_rel_l2(coarse, fine, floor=degenerate_floor)
        error, degenerate = completeness_error(
            fine.sum(dim=1),
            at_input[active],
            at_baseline[active],
            degenerate_floor=degenerate_floor,
            eps=eps,
        )
        completeness[active] = error
        # A degenerate baseline's completeness cannot be judged (the check leaves it out too): such
        # a sample converges on its step change alone.
        met = (change[active] <= step_change_tolerance) & (degenerate | (error <= completeness_tolerance))
        converged[active] = met
        active = active[~met.cpu()]
        marked = _mark(partition, active)
        if not marked.any():
            break
        active = torch.unique(partition.leaves[marked, 0])
        partition.split(marked, densities)
    return change, completeness, converged
