"""Comprehensiveness and sufficiency of token rankings (ERASER, DeYoung et al. 2020).

For each bin k (percent, default 1, 5, 10, 20, 50), the rationale is a sample's top k% tokens by
score, at least one: ``ceil(k / 100 * n)`` of its n rankable tokens (special tokens and padding are
never ranked, never removed and always kept). Then, with F the explained output,

    comprehensiveness = mean over bins of F(x) - F(x without the rationale)   (higher is better)
    sufficiency       = mean over bins of F(x) - F(the rationale alone)       (lower is better)

the area over the perturbation curve (AOPC) of each. "Without" means what the caller's output
function does with the tokens it is told to drop: replace them by a baseline token (positions stay;
the sequence is out of distribution) or delete them (the rest shift left; positions change). The
same for rankings drawn at random (seeded by the sample's position) gives the control, and the
margins are the method's lead over it: ``comprehensiveness_margin = method - random``,
``sufficiency_margin = random - method`` (both > 0 when the ranking beats chance).

The output function is ``f(keep, rows) -> (P,)``: the explained output of sample ``rows[p]`` with
only the tokens where ``keep[p]`` is True.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from mlflow_xai.seeding import sample_generator

KeptOutput = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: The per-sample quantities of the check, as ``Attribution.extras`` names them.
ERASER_QUANTITIES = (
    "comprehensiveness",
    "comprehensiveness_random",
    "comprehensiveness_margin",
    "sufficiency",
    "sufficiency_random",
    "sufficiency_margin",
)


def rationale_sizes(rankable: int, bins: Sequence[float]) -> list[int]:
    """Tokens in each bin's rationale: ceil(k / 100 * n), at least 1 and at most n."""
    return [min(rankable, max(1, math.ceil(k / 100 * rankable - 1e-9))) for k in bins]


def ranked_positions(scores: torch.Tensor, rankable: torch.Tensor) -> list[torch.Tensor]:
    """Each sample's rankable positions, highest score first (ties: the earlier position)."""
    out = []
    for row, allowed in zip(scores.double(), rankable, strict=True):
        positions = torch.nonzero(allowed, as_tuple=True)[0]
        order = torch.sort(row[positions], descending=True, stable=True).indices
        out.append(positions[order])
    return out


def random_positions(
    rankable: torch.Tensor, positions: Sequence[int], seed: int, draw: int
) -> list[torch.Tensor]:
    """Each sample's rankable positions in a random order seeded by (seed, position, draw)."""
    out = []
    for allowed, p in zip(rankable, positions, strict=True):
        candidates = torch.nonzero(allowed, as_tuple=True)[0]
        generator = sample_generator(seed, int(p), f"eraser/{draw}")
        out.append(candidates[torch.randperm(len(candidates), generator=generator).to(candidates.device)])
    return out


def _aopc(
    f: KeptOutput,
    orders: list[torch.Tensor],
    rankable: torch.Tensor,
    at_input: torch.Tensor,
    bins: Sequence[float],
    batch: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(comprehensiveness, sufficiency) per sample for the rankings ``orders``."""
    keeps, rows = [], []
    for i, order in enumerate(orders):
        for size in rationale_sizes(len(order), bins):
            top = order[:size]
            without = torch.ones_like(rankable[i])
            without[top] = False
            alone = ~rankable[i]
            alone = alone.clone()
            alone[top] = True
            keeps += [without, alone]
            rows += [i, i]
    keep = torch.stack(keeps)
    row = torch.tensor(rows, device=keep.device)
    outputs = torch.empty(len(keep), dtype=torch.float64, device=keep.device)
    with torch.no_grad():
        for start in range(0, len(keep), batch):
            part = slice(start, start + batch)
            outputs[part] = f(keep[part], row[part]).double()
    drops = (at_input[row] - outputs).view(len(orders), len(bins), 2)
    return drops[:, :, 0].mean(dim=1), drops[:, :, 1].mean(dim=1)


def comprehensiveness_sufficiency(
    f: KeptOutput,
    scores: torch.Tensor,
    rankable: torch.Tensor,
    positions: Sequence[int],
    *,
    bins: Sequence[float] = (1, 5, 10, 20, 50),
    random_draws: int = 3,
    seed: int = 0,
    batch: int = 128,
) -> dict[str, torch.Tensor]:
    """``ERASER_QUANTITIES`` per sample, (B,) float64, for token ``scores`` (B, L); ``rankable``
    (B, L) marks the tokens that may be ranked. A sample with no rankable token gets NaN."""
    everything = torch.ones_like(rankable)
    with torch.no_grad():
        at_input = f(everything, torch.arange(len(scores), device=rankable.device)).double()
    comprehensiveness, sufficiency = _aopc(
        f, ranked_positions(scores, rankable), rankable, at_input, bins, batch
    )
    random_comp = torch.zeros_like(comprehensiveness)
    random_suff = torch.zeros_like(sufficiency)
    for draw in range(random_draws):
        orders = random_positions(rankable, positions, seed, draw)
        c, s = _aopc(f, orders, rankable, at_input, bins, batch)
        random_comp += c / random_draws
        random_suff += s / random_draws
    empty = ~rankable.any(dim=1)
    out = {
        "comprehensiveness": comprehensiveness,
        "comprehensiveness_random": random_comp,
        "comprehensiveness_margin": comprehensiveness - random_comp,
        "sufficiency": sufficiency,
        "sufficiency_random": random_suff,
        "sufficiency_margin": random_suff - sufficiency,
    }
    return {
        key: torch.where(empty, torch.full_like(value, float("nan")), value) for key, value in out.items()
    }
