"""Step convergence: how much attributions change between a coarse and a fine integration, as a
relative L2 change and as a rank correlation. Pure functions on tensors.
"""

from __future__ import annotations

import torch

# --------------------------------------------------------------------------------------------------
# Convergence measures: pure functions on per-sample tensors


def step_change_rel_l2(coarse: torch.Tensor, fine: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """||fine - coarse|| / max(||fine||, floor) per sample (float64, shape (B,)); 0/0 is 0, x/0 is inf.

    With a ``floor``, attributions that are all but zero are judged in absolute terms (the floor
    is the completeness check's ``degenerate_floor``): noise over noise proves nothing.
    """
    diff = (fine.double() - coarse.double()).flatten(1).norm(dim=1)
    size = fine.double().flatten(1).norm(dim=1).clamp_min(floor)
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
