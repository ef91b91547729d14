"""Checks on attributions as pure functions on arrays: completeness (``completeness``), step
convergence (``convergence``) and drift against a baseline model (``drift``).

May import: nothing of the package but ``errors``; never config or model code.
"""

from mlflow_xai.checks.completeness import (
    COMPLETENESS_METRICS,
    GAP_ROUNDING_ULPS,
    CompletenessResult,
    completeness_error,
    gap_rounding,
)

__all__ = [
    "COMPLETENESS_METRICS",
    "CompletenessResult",
    "GAP_ROUNDING_ULPS",
    "completeness_error",
    "gap_rounding",
]
