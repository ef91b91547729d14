"""Quadrature rules on [0, 1] for path integrals.

Every rule's weights sum to exactly 1, so Integrated Gradients of a linear model (a constant
integrand) is exact whatever the rule and the step count. Captum's ``riemann_trapezoid`` is not:
its weights sum to 1 - 1/n.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

RULES = ("left", "right", "midpoint", "trapezoid", "gauss_legendre")


def nodes_and_weights(rule: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``n_steps`` nodes in [0, 1] and their weights (float64, weights summing to 1)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    if rule == "trapezoid" and n_steps < 2:
        raise ValueError(f"n_steps must be >= 2 with rule 'trapezoid', got {n_steps}")
    nodes, weights = _cached(rule, int(n_steps))
    return nodes.copy(), weights.copy()


@lru_cache(maxsize=64)
def _cached(rule: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    if rule == "left":
        nodes = np.arange(n) / n
        weights = np.full(n, 1.0 / n)
    elif rule == "right":
        nodes = np.arange(1, n + 1) / n
        weights = np.full(n, 1.0 / n)
    elif rule == "midpoint":
        nodes = (np.arange(n) + 0.5) / n
        weights = np.full(n, 1.0 / n)
    elif rule == "trapezoid":
        intervals = n - 1
        nodes = np.arange(n) / intervals
        weights = np.full(n, 1.0 / intervals)
        weights[[0, -1]] *= 0.5
    else:  # gauss_legendre on [-1, 1], mapped to [0, 1]
        x, w = np.polynomial.legendre.leggauss(n)
        nodes = (x + 1.0) / 2.0
        weights = w / 2.0
    # Remove the last ulp of drift so that sum(weights) == 1 holds to float64 rounding.
    weights = weights / weights.sum()
    return nodes.astype(np.float64), weights.astype(np.float64)


def nested_trapezoid_intervals(min_steps: int, max_steps: int) -> tuple[int, int]:
    """The interval counts of the first partition and of the finest grid of adaptive IG.

    The first partition has m equal intervals, each with its midpoint evaluated (2m + 1 gradient
    evaluations), with m the smallest power of two such that 2m + 1 >= ``min_steps``. Every node
    lies on the finest grid: 2^k intervals, the largest with 2^k + 1 <= ``max_steps``.
    """
    for name, value in (("min_steps", min_steps), ("max_steps", max_steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    first = 1
    while 2 * first + 1 < min_steps:
        first *= 2
    finest = 1
    while 2 * finest + 1 <= max_steps:
        finest *= 2
    if finest < 2 * first:
        raise ValueError(
            f"max_steps must be >= {2 * first + 1}, the gradient evaluations of the first check with "
            f"min_steps {min_steps} (m intervals and their midpoints, m a power of two), got {max_steps}"
        )
    return first, finest
