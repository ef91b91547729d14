"""Quadrature rules on [0, 1] against nodes and weights worked out by hand, never the code's own output."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from mlflow_xai.attribution.quadrature import RULES, nested_trapezoid_intervals, nodes_and_weights

S3, S35 = math.sqrt(1 / 3), math.sqrt(3 / 5)
# Gauss-Legendre with 4 points on [-1, 1]: x = +-sqrt(3/7 -+ 2/7 sqrt(6/5)), w = (18 +- sqrt(30)) / 36.
G4_INNER, G4_OUTER = math.sqrt(3 / 7 - 2 / 7 * math.sqrt(6 / 5)), math.sqrt(3 / 7 + 2 / 7 * math.sqrt(6 / 5))
G4_W_INNER, G4_W_OUTER = (18 + math.sqrt(30)) / 36, (18 - math.sqrt(30)) / 36

KNOWN = [
    # rule, n, nodes, weights
    ("left", 1, [0.0], [1.0]),
    ("left", 4, [0.0, 0.25, 0.5, 0.75], [0.25] * 4),
    ("right", 1, [1.0], [1.0]),
    ("right", 4, [0.25, 0.5, 0.75, 1.0], [0.25] * 4),
    ("midpoint", 1, [0.5], [1.0]),
    ("midpoint", 4, [0.125, 0.375, 0.625, 0.875], [0.25] * 4),
    ("trapezoid", 2, [0.0, 1.0], [0.5, 0.5]),
    ("trapezoid", 3, [0.0, 0.5, 1.0], [0.25, 0.5, 0.25]),
    ("trapezoid", 5, [0.0, 0.25, 0.5, 0.75, 1.0], [0.125, 0.25, 0.25, 0.25, 0.125]),
    ("gauss_legendre", 1, [0.5], [1.0]),
    ("gauss_legendre", 2, [(1 - S3) / 2, (1 + S3) / 2], [0.5, 0.5]),
    ("gauss_legendre", 3, [(1 - S35) / 2, 0.5, (1 + S35) / 2], [5 / 18, 8 / 18, 5 / 18]),
    (
        "gauss_legendre",
        4,
        [(1 - G4_OUTER) / 2, (1 - G4_INNER) / 2, (1 + G4_INNER) / 2, (1 + G4_OUTER) / 2],
        [G4_W_OUTER / 2, G4_W_INNER / 2, G4_W_INNER / 2, G4_W_OUTER / 2],
    ),
]


@pytest.mark.parametrize(("rule", "n", "nodes", "weights"), KNOWN, ids=[f"{k[0]}-{k[1]}" for k in KNOWN])
def test_nodes_and_weights_by_hand(rule, n, nodes, weights):
    x, w = nodes_and_weights(rule, n)
    assert x.dtype == np.float64 and w.dtype == np.float64
    assert x.shape == w.shape == (n,)
    np.testing.assert_allclose(x, nodes, rtol=0, atol=1e-15)
    np.testing.assert_allclose(w, weights, rtol=0, atol=1e-15)


def test_left_evaluates_at_the_baseline_and_right_at_the_input():
    for n in (1, 2, 7, 50):
        assert nodes_and_weights("left", n)[0][0] == 0.0
        assert nodes_and_weights("right", n)[0][-1] == 1.0
        trapezoid = nodes_and_weights("trapezoid", n + 1)[0]
        assert trapezoid[0] == 0.0 and trapezoid[-1] == 1.0
    for rule in ("midpoint", "gauss_legendre"):  # open rules: neither end
        x = nodes_and_weights(rule, 6)[0]
        assert 0.0 < x.min() and x.max() < 1.0


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("n", [2, 3, 8, 33, 64])
def test_weights_sum_to_one_and_nodes_increase(rule, n):
    x, w = nodes_and_weights(rule, n)
    assert abs(w.sum() - 1.0) <= 4e-16
    assert (w > 0).all()
    assert (np.diff(x) > 0).all() and x[0] >= 0.0 and x[-1] <= 1.0


# The highest degree of polynomial each rule integrates exactly with n nodes.
EXACT_DEGREE = {
    "left": lambda n: 0,
    "right": lambda n: 0,
    "midpoint": lambda n: 1,
    "trapezoid": lambda n: 1,
    "gauss_legendre": lambda n: 2 * n - 1,
}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("n", [2, 3, 5])
def test_exact_up_to_its_degree_and_not_beyond(rule, n):
    x, w = nodes_and_weights(rule, n)
    degree = EXACT_DEGREE[rule](n)
    for k in range(degree + 1):
        assert w @ x**k == pytest.approx(1 / (k + 1), rel=1e-13, abs=0), k  # integral of x^k over [0, 1]
    assert abs(w @ x ** (degree + 1) - 1 / (degree + 2)) > 1e-7


def test_gauss_legendre_is_symmetric_about_one_half():
    x, w = nodes_and_weights("gauss_legendre", 9)
    np.testing.assert_allclose(x + x[::-1], 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(w, w[::-1], rtol=0, atol=1e-15)
    assert x[4] == pytest.approx(0.5, abs=1e-15)


def test_returned_arrays_are_copies():
    x, w = nodes_and_weights("left", 4)
    x[:] = 7.0
    w[:] = 7.0
    x2, w2 = nodes_and_weights("left", 4)
    np.testing.assert_array_equal(x2, [0.0, 0.25, 0.5, 0.75])
    np.testing.assert_array_equal(w2, [0.25] * 4)


def test_numpy_integer_step_counts_are_accepted():
    x, w = nodes_and_weights("right", np.int64(2))
    np.testing.assert_array_equal(x, [0.5, 1.0])
    np.testing.assert_array_equal(w, [0.5, 0.5])


def _raises(message: str):
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


@pytest.mark.parametrize("rule", ["simpson", "Left", "", None])
def test_unknown_rule(rule):
    with _raises(f"rule must be one of left, right, midpoint, trapezoid, gauss_legendre, got {rule!r}"):
        nodes_and_weights(rule, 4)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("n", [0, -3, 2.0, True, False, "4", None])
def test_bad_step_count(rule, n):
    with _raises(f"n_steps must be an integer >= 1, got {n!r}"):
        nodes_and_weights(rule, n)


def test_trapezoid_needs_two_nodes():
    with _raises("n_steps must be >= 2 with rule 'trapezoid', got 1"):
        nodes_and_weights("trapezoid", 1)
    with _raises("n_steps must be >= 2 with rule 'trapezoid', got 1"):
        nodes_and_weights("trapezoid", np.int64(1))


# --------------------------------------------------------------------------------------------------
# The nested trapezoid partitions of adaptive IG


@pytest.mark.parametrize(
    ("min_steps", "max_steps", "first", "finest"),
    [
        (1, 3, 1, 2),
        (3, 3, 1, 2),
        (2, 4, 1, 2),
        (4, 5, 2, 4),
        (4, 9, 2, 8),
        (5, 5, 2, 4),
        (6, 9, 4, 8),
        (6, 16, 4, 8),
        (6, 17, 4, 16),
        (9, 17, 4, 16),
        (10, 17, 8, 16),
        (17, 33, 8, 32),
        (18, 33, 16, 32),
        (16, 1000, 8, 512),
        (33, 1025, 16, 1024),
    ],
)
def test_nested_trapezoid_intervals_by_hand(min_steps, max_steps, first, finest):
    assert nested_trapezoid_intervals(min_steps, max_steps) == (first, finest)
    assert nested_trapezoid_intervals(np.int64(min_steps), np.int64(max_steps)) == (first, finest)


def test_nested_trapezoid_intervals_match_their_definition():
    """The first partition: the smallest power of two m with 2m + 1 >= min_steps; the finest grid: the
    largest 2^k with 2^k + 1 <= max_steps; an error unless the finest grid refines the first check."""
    powers = [2**k for k in range(12)]
    for min_steps in range(1, 40):
        first = min(m for m in powers if 2 * m + 1 >= min_steps)
        for max_steps in range(1, 80):
            finest = max((f for f in powers if f + 1 <= max_steps), default=1)
            if finest >= 2 * first:
                assert nested_trapezoid_intervals(min_steps, max_steps) == (first, finest)
            else:
                with pytest.raises(ValueError, match=rf"^max_steps must be >= {2 * first + 1}, "):
                    nested_trapezoid_intervals(min_steps, max_steps)


@pytest.mark.parametrize(
    ("min_steps", "max_steps", "needed"), [(1, 1, 3), (1, 2, 3), (4, 4, 5), (6, 8, 9), (18, 32, 33)]
)
def test_nested_trapezoid_intervals_too_few_max_steps(min_steps, max_steps, needed):
    message = (
        f"max_steps must be >= {needed}, the gradient evaluations of the first check with "
        f"min_steps {min_steps} (m intervals and their midpoints, m a power of two), got {max_steps}"
    )
    with _raises(message):
        nested_trapezoid_intervals(min_steps, max_steps)


@pytest.mark.parametrize("bad", [0, -1, 3.0, True, "9", None])
def test_nested_trapezoid_intervals_bad_arguments(bad):
    with _raises(f"min_steps must be an integer >= 1, got {bad!r}"):
        nested_trapezoid_intervals(bad, 9)
    with _raises(f"max_steps must be an integer >= 1, got {bad!r}"):
        nested_trapezoid_intervals(3, bad)
