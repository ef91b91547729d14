"""Deletion and insertion (Petsiuk et al., RISE 2018): does the output follow the attribution's ranking?

Features are taken in the order of their attribution, most important first, in ``steps`` equal
fractions. Deletion replaces them, group after group, by the baseline and records the explained
output F; insertion starts from the baseline and puts them back. Step k of ``steps`` moves the first
``floor(k * M / steps)`` of the M feature groups. Each curve is normalised by the output gap,

    n_k = (F_k - F(x')) / (F(x) - F(x')),

so deletion runs from 1 to 0 and insertion from 0 to 1, and its area is taken by the trapezoid over
the fractions k / steps. A faithful ranking makes deletion fall fast (a small area) and insertion rise
fast (a large one). Raw areas are not comparable across models, so the same curves are drawn for
random rankings (seeded per sample) and the margin over them is the number to hold:

    deletion_margin = random area - method area,   insertion_margin = method area - random area.

A random ranking removes each feature with equal chance, so on a linear model its expected curve is
the straight line 1 - k / steps and its expected area 1/2. A sample whose gap |F(x) - F(x')| is at or
below ``degenerate_floor`` has no curve to normalise: its areas are NaN and it is left out of every
summary, as the completeness check leaves it out.

Everything here takes the model as a function ``f(points, target) -> (n,)`` and arrays: no model,
config or method code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from mlflow_xai.seeding import sample_generator

ExplainedOutput = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``impute(points, out_of_place, sample, step)``: the points with their out-of-place entries filled.
Imputer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: What features out of place become: the baseline, or ROAD's noisy linear imputation.
REMOVALS = ("baseline", "noisy_linear")

#: The per-sample quantities of the check, as ``Attribution.extras`` names them (float, one per sample).
DELETION_INSERTION_QUANTITIES = (
    "deletion_auc",
    "deletion_random_auc",
    "deletion_margin",
    "insertion_auc",
    "insertion_random_auc",
    "insertion_margin",
)

#: How input elements are grouped: each on its own, every channel of a pixel together, or squares.
FEATURE_GROUPINGS = ("elements", "pixels", "patches")


def feature_groups(
    sample_shape: Sequence[int], features: str, patch_size: int = 4
) -> tuple[torch.Tensor, int]:
    """The group of each element of one input, flattened in C order, and the number of groups.

    ``pixels`` and ``patches`` need an image (C, H, W): a pixel's channels share a group, and a patch
    is a ``patch_size`` square of pixels (smaller at the right and bottom edges)."""
    shape = tuple(int(side) for side in sample_shape)
    size = math.prod(shape)
    if features == "elements":
        return torch.arange(size), size
    if features not in FEATURE_GROUPINGS:
        raise ValueError(f"features must be one of {', '.join(FEATURE_GROUPINGS)}, got {features!r}")
    if len(shape) != 3:
        raise ValueError(f"features {features!r} groups the pixels of images (C, H, W); inputs are {shape}")
    channels, height, width = shape
    rows = torch.arange(height).view(-1, 1)
    cols = torch.arange(width).view(1, -1)
    if features == "pixels":
        pixel = rows * width + cols
        return pixel.flatten().repeat(channels), height * width
    across = math.ceil(width / patch_size)
    patch = (rows // patch_size) * across + cols // patch_size
    return patch.flatten().repeat(channels), math.ceil(height / patch_size) * across


def group_order(attributions: torch.Tensor, groups: torch.Tensor, count: int) -> torch.Tensor:
    """(B, M): each sample's groups by their summed attribution, largest first (ties: lower index)."""
    flat = attributions.reshape(len(attributions), -1).double()
    scores = torch.zeros(len(flat), count, dtype=torch.float64, device=flat.device)
    scores.index_add_(1, groups.to(flat.device), flat)
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def random_orders(positions: Sequence[int], count: int, seed: int, draw: int) -> torch.Tensor:
    """(B, M): a random ranking of the groups per sample, seeded by (seed, position, draw) alone."""
    return torch.stack(
        [
            torch.randperm(count, generator=sample_generator(seed, int(p), f"deletion_insertion/{draw}"))
            for p in positions
        ]
    )


#: ROAD's neighbour weights (Rong et al. 2022): 1/6 for the four direct neighbours, 1/12 for the
#: four diagonal ones; a pixel on the border divides by the weights of the neighbours it has.
NEIGHBOUR_WEIGHTS = (
    (1 / 12, 1 / 6, 1 / 12),
    (1 / 6, 0.0, 1 / 6),
    (1 / 12, 1 / 6, 1 / 12),
)


def linear_imputation(
    images: torch.Tensor, removed: torch.Tensor, *, tolerance: float = 1e-6, max_iterations: int | None = None
) -> torch.Tensor:
    """ROAD's linear imputation: every removed value becomes the weighted mean of its eight
    neighbours (``NEIGHBOUR_WEIGHTS``), removed or not, per channel.

    ``images`` (n, C, H, W) and ``removed`` (bool, the same shape). The values of a plane's removed
    entries solve the linear system ``d_p v_p - sum_q w_pq v_q = sum_k w_pk x_k`` (q removed, k kept,
    d_p the weight of p's neighbours), which is symmetric and positive definite wherever the plane
    keeps at least one value; conjugate gradients solve it to a residual of ``tolerance`` times the
    right-hand side (at most ``max_iterations`` steps, by default 4 (H + W) + 50), each plane on its
    own, so that its values do not depend on the planes beside it in the batch. A plane with
    every value removed has nothing to impute from and is returned as zeros where removed. float64.
    """
    n, c, h, w = images.shape
    v = images.detach().double().reshape(n * c, 1, h, w)
    unknown = removed.reshape(n * c, 1, h, w)
    kernel = torch.tensor(NEIGHBOUR_WEIGHTS, dtype=torch.float64, device=v.device).view(1, 1, 3, 3)

    def spread(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t, kernel, padding=1)

    degree = spread(torch.ones_like(v))
    zero = torch.zeros_like(v)
    rhs = torch.where(unknown, spread(torch.where(unknown, zero, v)), zero)

    def system(t: torch.Tensor) -> torch.Tensor:
        return torch.where(unknown, degree * t - spread(t), zero)

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(dim=(1, 2, 3), keepdim=True)

    solution = zero.clone()
    residual = rhs.clone()
    direction = residual.clone()
    squared = dot(residual, residual)
    goal = (tolerance**2) * dot(rhs, rhs)
    tiny = torch.finfo(torch.float64).tiny
    for _ in range(max_iterations if max_iterations is not None else 4 * (h + w) + 50):
        active = squared > goal  # a plane stops where it converged: its result is the same in any batch
        if not bool(active.any()):
            break
        moved = system(direction)
        step = torch.where(active, squared / dot(direction, moved).clamp_min(tiny), 0.0)
        solution = solution + step * direction
        residual = residual - step * moved
        new_squared = dot(residual, residual)
        direction = torch.where(
            active, residual + (new_squared / squared.clamp_min(tiny)) * direction, direction
        )
        squared = new_squared
    return torch.where(unknown, solution, v).view(n, c, h, w)


def noisy_linear_imputer(positions: Sequence[int], *, noise: float, seed: int) -> Imputer:
    """ROAD's noisy linear imputation (Rong et al. 2022) for ``interior_curves``: the linear
    imputation of the out-of-place values plus Gaussian noise of standard deviation ``noise`` on
    them, drawn from (seed, the sample's position, the step). A plane with nothing left to impute
    from (every value out of place) keeps the baseline's values."""

    def impute(points: torch.Tensor, out_of_place: torch.Tensor, sample: torch.Tensor, step: torch.Tensor):
        filled = linear_imputation(points, out_of_place)
        draws = torch.stack(
            [
                torch.randn(
                    points.shape[1:],
                    generator=sample_generator(seed, int(positions[int(i)]), f"noisy_linear/{int(k)}"),
                    dtype=torch.float64,
                )
                for i, k in zip(sample, step, strict=True)
            ]
        ).to(filled.device)
        filled = torch.where(out_of_place, filled + noise * draws, filled)
        planes = out_of_place.flatten(2).all(dim=2)  # (n, C): nothing kept to impute from
        filled = torch.where(planes[:, :, None, None], points.double(), filled)
        return filled.to(points.dtype)

    return impute


def curve_counts(count: int, steps: int) -> list[int]:
    """Groups moved at each step k = 0 .. steps: floor(k * count / steps)."""
    return [k * count // steps for k in range(steps + 1)]


def interior_curves(
    f: ExplainedOutput,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    orders: torch.Tensor,
    groups: torch.Tensor,
    steps: int,
    *,
    insertion: bool,
    batch: int,
    impute: Imputer | None = None,
) -> torch.Tensor:
    """F at steps 1 .. steps - 1 of each sample's curve (the ends are F(x) and F(x') whatever the
    order): (B, steps - 1) float64, evaluated ``batch`` perturbed inputs at a time. With ``impute``
    the features out of place (removed, or not inserted yet) are filled by it instead of taken from
    the baseline."""
    n, count = len(x), orders.shape[1]
    counts = torch.tensor(curve_counts(count, steps)[1:-1], device=x.device)
    rank = torch.empty_like(orders)
    rank.scatter_(1, orders, torch.arange(count, device=orders.device).expand(n, count))
    element_rank = rank[:, groups.to(orders.device)].to(x.device)  # (B, D)
    flat_x, flat_base = x.reshape(n, -1), baseline.expand_as(x).reshape(n, -1)
    total = len(counts) * n
    out = torch.empty(total, dtype=torch.float64, device=x.device)
    for start in range(0, total, batch):
        pair = torch.arange(start, min(start + batch, total), device=x.device)
        step, sample = pair // n, pair % n
        moved = element_rank[sample] < counts[step].view(-1, 1)
        first, second = (flat_base, flat_x) if insertion else (flat_x, flat_base)
        points = torch.where(moved, second[sample], first[sample]).view(-1, *x.shape[1:])
        if impute is not None:
            out_of_place = (~moved if insertion else moved).view_as(points)
            points = impute(points, out_of_place, sample, step + 1)
        with torch.no_grad():
            out[start : start + len(pair)] = f(points, target[sample]).double()
    return out.view(len(counts), n).T


def normalised_area(
    interior: torch.Tensor, at_input: torch.Tensor, at_baseline: torch.Tensor, *, floor: float
) -> torch.Tensor:
    """Trapezoid area under the normalised curve, per sample; NaN where |F(x) - F(x')| <= floor.

    One of a curve's ends is F(x) (normalised 1) and the other F(x') (0), whichever way it runs, so
    the trapezoid needs only the interior: (sum of the interior + 1/2) / steps."""
    gap = (at_input - at_baseline).double()
    normal = (interior - at_baseline.double().view(-1, 1)) / gap.view(-1, 1)
    steps = interior.shape[1] + 1
    area = (normal.sum(dim=1) + 0.5) / steps
    return torch.where(gap.abs() > floor, area, torch.full_like(area, float("nan")))


def normalised_curve(
    interior: torch.Tensor,
    at_input: torch.Tensor,
    at_baseline: torch.Tensor,
    *,
    insertion: bool,
    floor: float,
) -> torch.Tensor:
    """(B, steps + 1) the whole normalised curve, ends included (deletion 1 .. 0, insertion 0 .. 1);
    a row of NaN where |F(x) - F(x')| <= floor."""
    gap = (at_input - at_baseline).double().view(-1, 1)
    normal = (interior - at_baseline.double().view(-1, 1)) / gap
    ones, zeros = torch.ones_like(gap), torch.zeros_like(gap)
    ends = (zeros, ones) if insertion else (ones, zeros)
    curve = torch.cat([ends[0], normal, ends[1]], dim=1)
    return torch.where(gap.abs() > floor, curve, torch.full_like(curve, float("nan")))


def deletion_insertion(
    f: ExplainedOutput,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    attributions: torch.Tensor,
    positions: Sequence[int],
    *,
    steps: int = 10,
    features: str = "elements",
    patch_size: int = 4,
    random_draws: int = 3,
    seed: int = 0,
    batch: int = 128,
    degenerate_floor: float = 1e-6,
    removal: str = "baseline",
    noise: float = 0.01,
) -> dict[str, torch.Tensor]:
    """The check's per-sample quantities (``DELETION_INSERTION_QUANTITIES``), each (B,) float64, and
    the normalised curves behind them (``deletion_curve``, ``deletion_random_curve``, ...), each
    (B, steps + 1) float64.

    ``positions`` are the samples' positions in the probe set: the random rankings depend on them
    and on ``seed`` only, so a sample's result does not depend on its batch."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (a curve needs a point between its ends), got {steps}")
    if removal not in REMOVALS:
        raise ValueError(f"removal must be one of {', '.join(REMOVALS)}, got {removal!r}")
    if removal == "noisy_linear" and x.ndim != 4:
        raise ValueError(
            "removal 'noisy_linear' imputes from neighbouring pixels of images (C, H, W); inputs are "
            f"{tuple(x.shape[1:])}"
        )
    impute = noisy_linear_imputer(positions, noise=noise, seed=seed) if removal == "noisy_linear" else None
    groups, count = feature_groups(x.shape[1:], features, patch_size)
    with torch.no_grad():
        at_input, at_baseline = f(x, target).double(), f(baseline.expand_as(x), target).double()

    def areas(orders: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(area, curve) of deletion, then of insertion, in ``orders``."""
        found = []
        for insertion in (False, True):
            interior = interior_curves(
                f, x, baseline, target, orders, groups, steps, insertion=insertion, batch=batch, impute=impute
            )
            found.append(
                (
                    normalised_area(interior, at_input, at_baseline, floor=degenerate_floor),
                    normalised_curve(
                        interior, at_input, at_baseline, insertion=insertion, floor=degenerate_floor
                    ),
                )
            )
        return found

    (deletion, deletion_curve), (insertion, insertion_curve) = areas(
        group_order(attributions, groups, count).to(x.device)
    )
    random_deletion, random_insertion = torch.zeros_like(deletion), torch.zeros_like(insertion)
    random_deletion_curve = torch.zeros_like(deletion_curve)
    random_insertion_curve = torch.zeros_like(insertion_curve)
    for draw in range(random_draws):
        (d, d_curve), (i, i_curve) = areas(random_orders(positions, count, seed, draw).to(x.device))
        random_deletion += d / random_draws
        random_insertion += i / random_draws
        random_deletion_curve += d_curve / random_draws
        random_insertion_curve += i_curve / random_draws
    return {
        "deletion_auc": deletion,
        "deletion_random_auc": random_deletion,
        "deletion_margin": random_deletion - deletion,
        "insertion_auc": insertion,
        "insertion_random_auc": random_insertion,
        "insertion_margin": insertion - random_insertion,
        # The normalised curves, (B, steps + 1): for the report's figure, not summarised.
        "deletion_curve": deletion_curve,
        "deletion_random_curve": random_deletion_curve,
        "insertion_curve": insertion_curve,
        "insertion_random_curve": random_insertion_curve,
    }
