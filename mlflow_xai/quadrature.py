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
