"""Checks on attributions: pure functions on arrays, plus their direction for a gate.

One definition of the completeness error and of a degenerate baseline serves adaptive IG (to stop
refining), the completeness check, the IG figures and the gate.

The output gap F(x) - F(x') is itself a difference of two rounded numbers: a float32 model whose
logits sit near 1000 cannot resolve a gap below ~1e-4, however exact its attributions are. So the
check never blames the attribution for what rounding in the outputs can explain:

* ``gap_rounding = GAP_ROUNDING_ULPS * eps(dtype) * max(|F(x)|, |F(x')|)`` bounds that rounding;
* a baseline is degenerate (neither passed nor failed) when ``|gap|`` is below
  ``max(degenerate_floor, gap_rounding)``, or exactly 0: the gap is too small to be told from zero;
* the relative error counts only the discrepancy beyond the rounding:
  ``max(|sum(attr) - gap| - gap_rounding, 0) / |gap|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Units in the last place of the larger output that the gap may carry: each of F(x) and F(x') is
#: rounded once to the model's dtype (half an ulp each), and its last layer adds a few roundings
#: of numbers of that size (a bias added to a dot product, a log-sum-exp).
GAP_ROUNDING_ULPS = 4.0


def gap_rounding(
    output_at_input: torch.Tensor, output_at_baseline: torch.Tensor, eps: float
) -> torch.Tensor:
    """How far rounding in the model's dtype (machine epsilon ``eps``) can move F(x) - F(x'),
    per sample (float64)."""
    scale = torch.maximum(output_at_input.double().abs(), output_at_baseline.double().abs())
    return GAP_ROUNDING_ULPS * eps * scale


def completeness_error(
    attribution_sum: torch.Tensor,
    output_at_input: torch.Tensor,
    output_at_baseline: torch.Tensor,
    *,
    degenerate_floor: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the relative completeness error and whether the baseline is degenerate.

    ``attribution_sum`` is each sample's attributions summed in full precision (before they are
    stored as float16 masks); ``eps`` is the machine epsilon of the dtype the outputs were computed
    in. Returns ``(rel_error, degenerate)``: float64 errors, NaN where the baseline is degenerate
    (and where the sum is NaN), and a bool mask. See the module docstring for the definitions.
    """
    total = attribution_sum.double()
    gap = output_at_input.double() - output_at_baseline.double()
    rounding = gap_rounding(output_at_input, output_at_baseline, eps)
    degenerate = (gap.abs() < rounding.clamp_min(degenerate_floor)) | (gap == 0)
    excess = ((total - gap).abs() - rounding).clamp_min(0.0)
    error = excess / gap.abs()
    error = torch.where(total.isnan(), total, error)  # clamp_min would turn a NaN sum into 0
    return torch.where(degenerate, torch.full_like(error, float("nan")), error), degenerate


@dataclass(frozen=True)
class CompletenessResult:
    """Per-sample completeness, with degenerate baselines kept apart (neither passed nor failed)."""

    rel_error: np.ndarray  # (N,) float64, NaN where the baseline is degenerate
    output_gap: np.ndarray  # (N,) F(x) - F(x')
    degenerate: np.ndarray  # (N,) bool
    tolerance: float

    higher_is_better = False

    @classmethod
    def compute(
        cls,
        attribution_sum: np.ndarray,
        output_at_input: np.ndarray,
        output_at_baseline: np.ndarray,
        *,
        tolerance: float,
        degenerate_floor: float,
        eps: float,
    ) -> CompletenessResult:
        def tensor(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))

        at_input, at_baseline = tensor(output_at_input), tensor(output_at_baseline)
        error, degenerate = completeness_error(
            tensor(attribution_sum),
            at_input,
            at_baseline,
            degenerate_floor=degenerate_floor,
            eps=eps,
        )
        return cls(error.numpy(), (at_input - at_baseline).numpy(), degenerate.numpy(), tolerance)

    @property
    def passed(self) -> np.ndarray:
        """Per sample: True within tolerance, False outside, and False for degenerate ones."""
        return ~self.degenerate & (np.nan_to_num(self.rel_error, nan=np.inf) <= self.tolerance)

    def metrics(self) -> dict[str, float]:
        valid = self.rel_error[~self.degenerate]
        out = {"degenerate_baseline_count": float(self.degenerate.sum())}
        if len(valid):
            out.update(
                {
                    "completeness_rel_error_median": float(np.median(valid)),
                    "completeness_rel_error_p95": float(np.percentile(valid, 95)),
                    "completeness_rel_error_max": float(valid.max()),
                    "completeness_pass_fraction": float(self.passed[~self.degenerate].mean()),
                }
            )
        return out


#: The metrics ``CompletenessResult.metrics`` can produce: the count always, the rest when at least
#: one sample could be judged.
COMPLETENESS_METRICS = (
    "degenerate_baseline_count",
    "completeness_rel_error_median",
    "completeness_rel_error_p95",
    "completeness_rel_error_max",
    "completeness_pass_fraction",
)
