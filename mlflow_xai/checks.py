"""Checks on attributions: pure functions on arrays, plus their direction for a gate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def completeness_rel_error(
    attribution_sum: np.ndarray, output_at_input: np.ndarray, output_at_baseline: np.ndarray
) -> np.ndarray:
    """|sum(attr) - (F(x) - F(x'))| / |F(x) - F(x')| per sample (inf where F(x) == F(x')).

    ``attribution_sum`` is each sample's attributions summed in full precision, before they are
    stored as float16 masks.
    """
    total = attribution_sum.astype(np.float64)
    gap = output_at_input.astype(np.float64) - output_at_baseline.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(total - gap) / np.abs(gap)


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
    ) -> CompletenessResult:
        gap = output_at_input.astype(np.float64) - output_at_baseline.astype(np.float64)
        degenerate = np.abs(gap) < degenerate_floor
        error = completeness_rel_error(attribution_sum, output_at_input, output_at_baseline)
        error = np.where(degenerate, np.nan, error)
        return cls(error, gap, degenerate, tolerance)

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
