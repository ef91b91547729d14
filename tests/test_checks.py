"""mlflow_xai.checks against answers worked out by hand from its module docstring.

Numbers are chosen to be exact in binary (eps = 2**-10, gaps of 4 or 64) so that most equalities hold
exactly: rel_error = max(|sum - gap| - rounding, 0) / |gap|, rounding = 4 eps max(|F(x)|, |F(x')|),
degenerate when |gap| < max(floor, rounding).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlflow_xai.checks import (
    COMPLETENESS_METRICS,
    GAP_ROUNDING_ULPS,
    CompletenessResult,
    completeness_error,
    gap_rounding,
)

EPS = 2.0**-10  # a coarse "machine epsilon" that keeps the arithmetic exact


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def error(total, at_input, at_baseline, *, floor=0.0, eps=0.0):
    """completeness_error on scalars: (rel_error, degenerate) of one sample as Python values."""
    rel, degenerate = completeness_error(
        _t(total), _t(at_input), _t(at_baseline), degenerate_floor=floor, eps=eps
    )
    return rel.item(), bool(degenerate.item())


# --------------------------------------------------------------------------------------------------
# gap_rounding


def test_gap_rounding_is_four_ulps_of_the_larger_output():
    assert GAP_ROUNDING_ULPS == 4.0
    at_input, at_baseline = _t(100.0, 10.0, -3.0, 0.0), _t(36.0, -90.0, 2.0, 0.0)
    got = gap_rounding(at_input, at_baseline, EPS)
    # max(|F(x)|, |F(x')|) = 100, 90, 3, 0
    assert got.dtype == torch.float64
    assert got.tolist() == [4 * EPS * 100, 4 * EPS * 90, 4 * EPS * 3, 0.0]


def test_gap_rounding_is_computed_in_float64():
    # 1 + 2**-30 is not a float32 number: a float32 computation would lose it.
    big = torch.tensor([1.0 + 2.0**-30], dtype=torch.float64)
    got = gap_rounding(big, torch.zeros(1, dtype=torch.float64), 1.0)
    assert got.item() == 4.0 * (1.0 + 2.0**-30)
    half = gap_rounding(
        torch.tensor([3.0], dtype=torch.float16), torch.tensor([-5.0], dtype=torch.float16), EPS
    )
    assert half.dtype == torch.float64 and half.item() == 4 * EPS * 5


# --------------------------------------------------------------------------------------------------
# completeness_error


def test_exact_attributions_have_zero_error():
    assert error(2.0, 3.0, 1.0) == (0.0, False)


@pytest.mark.parametrize("total", [2.5, 1.5])
def test_a_sum_above_or_below_the_gap_gives_the_same_error(total):
    # gap = 3 - 1 = 2; |2.5 - 2| = |1.5 - 2| = 0.5, over |gap| = 2
    assert error(total, 3.0, 1.0) == (0.25, False)


@pytest.mark.parametrize(("total", "expected"), [(-2.5, 0.25), (-1.0, 0.5), (-3.0, 0.5), (1.0, 1.5)])
def test_the_denominator_is_the_absolute_gap_not_the_sum(total, expected):
    # gap = 1 - 3 = -2: the error is |total + 2| / 2 (dividing by |total| would give 0.2, 1, 1/3, 3)
    assert error(total, 1.0, 3.0) == (expected, False)


def test_errors_are_float64_and_keep_the_batch_shape():
    rel, degenerate = completeness_error(
        torch.tensor([2.0, 2.5], dtype=torch.float32),
        torch.tensor([3.0, 3.0], dtype=torch.float32),
        torch.tensor([1.0, 1.0], dtype=torch.float32),
        degenerate_floor=0.0,
        eps=0.0,
    )
    assert rel.dtype == torch.float64 and rel.tolist() == [0.0, 0.25]
    assert degenerate.dtype == torch.bool and degenerate.tolist() == [False, False]


@pytest.mark.parametrize(
    ("at_input", "degenerate"),
    [
        (0.5e-3, True),  # gap below the floor
        (-0.5e-3, True),  # a negative gap is judged by its size
        (0.0, True),  # no gap at all
        (1e-3, False),  # at the floor: judged
        (-1e-3, False),
        (2e-3, False),
    ],
)
def test_degenerate_floor(at_input, degenerate):
    rel, flagged = error(at_input + 0.25 * abs(at_input), at_input, 0.0, floor=1e-3)
    assert flagged is degenerate
    if degenerate:
        assert math.isnan(rel)  # neither passed nor failed
    else:
        assert rel == pytest.approx(0.25, rel=1e-12)


def test_a_degenerate_sample_has_nan_error_even_when_its_sum_is_far_off():
    rel, degenerate = error(5.0, 1e-7, 0.0, floor=1e-6)
    assert degenerate and math.isnan(rel)


def test_no_floor_judges_every_nonzero_gap():
    assert error(2e-12, 1e-12, 0.0) == (pytest.approx(1.0), False)


# F(x) = 100, F(x') = 36: gap 64, rounding = 4 * 2**-10 * 100 = 0.390625 (exact).
ROUNDING = 4 * EPS * 100


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (64.0, 0.0),
        (64.0 + 0.3, 0.0),  # within the rounding: no error
        (64.0 - 0.3, 0.0),
        (64.0 + ROUNDING, 0.0),  # exactly the rounding
        (64.0 + ROUNDING + 1.0, 1.0 / 64),  # only the excess beyond the rounding counts
        (64.0 - ROUNDING - 1.0, 1.0 / 64),
        (64.0 + ROUNDING + 16.0, 0.25),
    ],
)
def test_the_rounding_term_is_forgiven_and_only_the_excess_counts(total, expected):
    assert error(total, 100.0, 36.0, eps=EPS) == (expected, False)


def test_the_rounding_uses_the_larger_output_in_absolute_value():
    # F(x) = 10, F(x') = -90: gap 100, rounding 4 eps * 90 (from the baseline's output, negative).
    rounding = 4 * EPS * 90
    assert error(100.0 + rounding + 2.0, 10.0, -90.0, eps=EPS) == (0.02, False)
    assert error(100.0 + rounding, 10.0, -90.0, eps=EPS) == (0.0, False)
    # F(x) = -90, F(x') = 10: the same with the roles swapped.
    assert error(-100.0 - rounding - 2.0, -90.0, 10.0, eps=EPS) == (0.02, False)


def test_a_gap_within_the_rounding_is_degenerate_whatever_the_floor():
    # F(x) = 1000, F(x') = 999.75: gap 0.25 < rounding 4 * 2**-10 * 1000 = 3.90625
    rel, degenerate = error(0.25, 1000.0, 999.75, floor=1e-6, eps=EPS)
    assert degenerate and math.isnan(rel)
    # the same gap at small outputs is judged (rounding 4 * 2**-10 * 0.5 < 0.25)
    assert error(0.25, 0.5, 0.25, floor=1e-6, eps=EPS) == (0.0, False)


def test_the_floor_applies_when_larger_than_the_rounding():
    # gap 0.25, rounding 4 * 2**-10 * 0.5 ~ 0.002, floor 0.5: degenerate by the floor
    rel, degenerate = error(0.25, 0.5, 0.25, floor=0.5, eps=EPS)
    assert degenerate and math.isnan(rel)


@pytest.mark.parametrize("total", [float("nan"), float("inf")])
def test_a_nan_or_infinite_sum_is_not_a_zero_error(total):
    rel, degenerate = error(total, 100.0, 36.0, eps=EPS)  # clamp_min would turn a NaN into 0
    assert not degenerate
    assert math.isnan(rel) or math.isinf(rel)
    assert not rel <= 1.0


# --------------------------------------------------------------------------------------------------
# CompletenessResult.compute and passed


def test_compute_returns_errors_gaps_and_flags():
    result = CompletenessResult.compute(
        np.array([2.0, 1.5, 5.0, -2.5]),
        np.array([3.0, 3.0, 1e-9, 1.0]),
        np.array([1.0, 1.0, 0.0, 3.0]),
        tolerance=0.1,
        degenerate_floor=1e-6,
        eps=0.0,
    )
    assert result.rel_error.dtype == np.float64
    np.testing.assert_array_equal(result.rel_error, [0.0, 0.25, np.nan, 0.25])
    np.testing.assert_array_equal(result.output_gap, [2.0, 2.0, 1e-9, -2.0])
    np.testing.assert_array_equal(result.degenerate, [False, False, True, False])
    assert result.tolerance == 0.1
    np.testing.assert_array_equal(result.passed, [True, False, False, False])
    assert CompletenessResult.higher_is_better is False


def test_compute_takes_float32_arrays_and_the_eps_of_the_outputs():
    result = CompletenessResult.compute(
        np.array([64.0 + ROUNDING + 1.0], dtype=np.float32),
        np.array([100.0], dtype=np.float32),
        np.array([36.0], dtype=np.float32),
        tolerance=0.01,
        degenerate_floor=1e-6,
        eps=EPS,
    )
    np.testing.assert_array_equal(result.rel_error, [1.0 / 64])
    np.testing.assert_array_equal(result.output_gap, [64.0])
    assert result.output_gap.dtype == np.float64


def _as(kind: str, values: list[float]) -> object:
    if kind == "list":
        return values
    if kind == "big_endian":  # as np.load gives an array saved on a big-endian machine
        return np.array(values, dtype=">f8")
    if kind == "float32_view":  # a reversed (negative-stride) view, as a slice may hand over
        return np.array(values[::-1], dtype=np.float32)[::-1]
    return np.array(values, dtype=np.int64)


@pytest.mark.parametrize("kind", ["list", "big_endian", "float32_view", "int64"])
@pytest.mark.parametrize("argument", ["attribution_sum", "output_at_input", "output_at_baseline"])
def test_compute_converts_any_numeric_array_to_float64(kind, argument):
    arguments = {
        "attribution_sum": [2.0, 1.0],
        "output_at_input": [3.0, 3.0],
        "output_at_baseline": [1.0, 1.0],
    }
    arguments[argument] = _as(kind, arguments[argument])
    result = CompletenessResult.compute(**arguments, tolerance=0.1, degenerate_floor=1e-6, eps=0.0)
    np.testing.assert_array_equal(result.rel_error, [0.0, 0.5])
    np.testing.assert_array_equal(result.output_gap, [2.0, 2.0])
    assert result.rel_error.dtype == np.float64 and result.output_gap.dtype == np.float64


def _result(rel_error, degenerate, tolerance=0.25):
    rel_error = np.asarray(rel_error, dtype=np.float64)
    return CompletenessResult(
        rel_error, np.ones_like(rel_error), np.asarray(degenerate, dtype=bool), tolerance
    )


@pytest.mark.parametrize(
    ("tolerance", "passed"),
    [(0.25, True), (0.2500001, True), (0.2499999, False), (0.0, False)],
)
def test_passed_includes_the_tolerance_itself(tolerance, passed):
    assert _result([0.25], [False], tolerance).passed.tolist() == [passed]


def test_zero_error_passes_a_zero_tolerance():
    assert _result([0.0], [False], 0.0).passed.tolist() == [True]


def test_degenerate_and_nan_samples_are_not_passed():
    result = _result([np.nan, np.nan, 0.0, np.inf], [True, False, False, False], tolerance=1e9)
    assert result.passed.tolist() == [False, False, True, False]
    assert result.passed.dtype == bool


def test_a_nan_sum_fails_the_check_end_to_end():
    result = CompletenessResult.compute(
        np.array([np.nan, 2.0]),
        np.array([3.0, 3.0]),
        np.array([1.0, 1.0]),
        tolerance=1.0,
        degenerate_floor=1e-6,
        eps=1e-7,
    )
    assert result.degenerate.tolist() == [False, False]
    assert math.isnan(result.rel_error[0])
    assert result.passed.tolist() == [False, True]
    assert result.metrics()["completeness_pass_fraction"] == 0.5


# --------------------------------------------------------------------------------------------------
# metrics


def test_metrics_summarise_judged_samples_only():
    # Judged errors 0.0, 0.1, 0.2, 0.3, 1.4 (mean 0.4, median 0.2); two degenerate samples.
    result = _result([0.3, np.nan, 0.0, 1.4, 0.1, np.nan, 0.2], [0, 1, 0, 0, 0, 1, 0], tolerance=0.25)
    metrics = result.metrics()
    assert set(metrics) == set(COMPLETENESS_METRICS)
    assert all(type(v) is float for v in metrics.values())
    assert metrics["degenerate_baseline_count"] == 2.0
    assert metrics["completeness_rel_error_median"] == pytest.approx(0.2, abs=1e-15)
    # p95 of 5 sorted values by linear interpolation: index 0.95 * 4 = 3.8, so 0.3 + 0.8 * 1.1
    assert metrics["completeness_rel_error_p95"] == pytest.approx(1.18, abs=1e-12)
    assert metrics["completeness_rel_error_max"] == 1.4
    assert metrics["completeness_pass_fraction"] == pytest.approx(3 / 5, abs=1e-15)  # not 3 / 7


def test_metrics_of_an_even_count_take_the_middle_pair():
    metrics = _result([0.4, 0.1, 0.2, 0.8], [0, 0, 0, 0], tolerance=0.2).metrics()
    assert metrics["completeness_rel_error_median"] == pytest.approx(0.3, abs=1e-15)
    # index 0.95 * 3 = 2.85 -> 0.4 + 0.85 * 0.4
    assert metrics["completeness_rel_error_p95"] == pytest.approx(0.74, abs=1e-12)
    assert metrics["completeness_rel_error_max"] == 0.8
    assert metrics["completeness_pass_fraction"] == 0.5  # 0.1 and 0.2 (inclusive)
    assert metrics["degenerate_baseline_count"] == 0.0


def test_metrics_of_one_judged_sample():
    metrics = _result([np.nan, 0.125], [1, 0], tolerance=0.1).metrics()
    assert metrics == {
        "degenerate_baseline_count": 1.0,
        "completeness_rel_error_median": 0.125,
        "completeness_rel_error_p95": 0.125,
        "completeness_rel_error_max": 0.125,
        "completeness_pass_fraction": 0.0,
    }


def test_no_completeness_statistics_when_every_sample_is_degenerate():
    assert _result([np.nan, np.nan, np.nan], [1, 1, 1]).metrics() == {"degenerate_baseline_count": 3.0}


def test_a_nan_error_among_judged_samples_is_not_hidden():
    metrics = _result([0.1, np.nan, 0.2], [0, 0, 0], tolerance=1.0).metrics()
    assert metrics["completeness_pass_fraction"] == pytest.approx(2 / 3)
    assert math.isnan(metrics["completeness_rel_error_max"])


def test_completeness_metrics_names_what_metrics_can_produce():
    assert COMPLETENESS_METRICS == (
        "degenerate_baseline_count",
        "completeness_rel_error_median",
        "completeness_rel_error_p95",
        "completeness_rel_error_max",
        "completeness_pass_fraction",
    )
    assert set(_result([0.0], [0]).metrics()) == set(COMPLETENESS_METRICS)
    assert set(_result([np.nan], [1]).metrics()) == {COMPLETENESS_METRICS[0]}


def test_a_gap_of_exactly_one_is_judged_not_degenerate():
    error, degenerate = completeness_error(
        torch.tensor([1.5]), torch.tensor([1.0]), torch.tensor([0.0]), degenerate_floor=1e-6, eps=0.0
    )
    assert degenerate.tolist() == [False] and error.tolist() == [0.5]
