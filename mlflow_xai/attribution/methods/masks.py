"""Feature masks: which input features a perturbation method switches on and off together.

A mask holds one integer group id per pixel, shape ``(B, 1, *spatial)`` (every channel of a pixel
is in the same group), with ids 0..k-1 in each sample.
"""

from __future__ import annotations

import math

import torch

from mlflow_xai.errors import ProbeError


def feature_mask(config, x: torch.Tensor) -> torch.Tensor:
    """The mask described by a ``FeatureMaskConfig`` for the batch ``x``."""
    if config.kind == "superpixel":
        return superpixel_mask(x, config.n_segments, config.compactness, config.iterations)
    return grid_mask(x, config.patch_size)


def grid_mask(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Square patches of ``patch_size`` pixels over the spatial axes (the last ones cut short).

    Inputs without spatial axes, shape (B, features), are cut into runs of ``patch_size`` features.
    """
    if x.ndim == 2:
        ids = torch.arange(x.shape[1], device=x.device) // patch_size
        return ids.expand(x.shape[0], -1).contiguous()
    spatial = tuple(x.shape[2:])
    ids = torch.zeros(spatial, dtype=torch.long, device=x.device)
    for axis, size in enumerate(spatial):
        blocks = torch.arange(size, device=x.device) // patch_size
        shape = [1] * len(spatial)
        shape[axis] = size
        ids = ids * math.ceil(size / patch_size) + blocks.view(shape)
    return ids.expand(x.shape[0], 1, *spatial).contiguous()


def superpixel_mask(
    x: torch.Tensor, n_segments: int, compactness: float = 1.0, iterations: int = 10
) -> torch.Tensor:
    """Superpixels by k-means on colour and position, one clustering per image (B, C, H, W).

    Centres start on a regular grid, so the result is deterministic. Colour is measured in units of
    the image's standard deviation and position in units of the grid spacing, times
    ``compactness``: larger values give more square, less colour-following segments.
    """
    if x.ndim != 4:
        raise ProbeError(
            f"superpixel feature masks need images of shape (batch, channels, height, width), "
            f"got shape {list(x.shape)}; use feature_mask kind 'grid'"
        )
    batch, channels, height, width = x.shape
    rows = max(1, min(height, round(math.sqrt(n_segments * height / width))))
    cols = max(1, min(width, round(n_segments / rows)))
    spacing = math.sqrt(height * width / (rows * cols))

    data = x.detach().to(torch.float32)
    colour = data / data.flatten(1).std(dim=1).clamp_min(1e-8).view(-1, 1, 1, 1)
    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=x.device),
        torch.arange(width, dtype=torch.float32, device=x.device),
        indexing="ij",
    )
    position = torch.stack([yy, xx]) * (compactness / spacing)
    points = torch.cat([colour, position.expand(batch, -1, -1, -1)], dim=1)
    points = points.flatten(2).transpose(1, 2)  # (B, H*W, C+2)

    centre_y = ((torch.arange(rows, dtype=torch.float32) + 0.5) * height / rows).long()
    centre_x = ((torch.arange(cols, dtype=torch.float32) + 0.5) * width / cols).long()
    start = (centre_y.view(-1, 1) * width + centre_x.view(1, -1)).flatten().to(x.device)
    centres = points[:, start]  # (B, K, D)
    k = centres.shape[1]
    for _ in range(iterations):
        labels = torch.cdist(points, centres).argmin(dim=2)  # (B, P)
        sums = torch.zeros_like(centres).scatter_add_(1, labels.unsqueeze(-1).expand_as(points), points)
        counts = torch.zeros(batch, k, device=x.device).scatter_add_(
            1, labels, torch.ones_like(labels, dtype=torch.float32)
        )
        filled = counts > 0
        centres = torch.where(filled.unsqueeze(-1), sums / counts.clamp_min(1).unsqueeze(-1), centres)
    labels = torch.cdist(points, centres).argmin(dim=2)
    # Renumber each image's segments 0..k_i-1 (an empty centre leaves a gap otherwise).
    compact = torch.stack([torch.unique(row, return_inverse=True)[1] for row in labels])
    return compact.view(batch, 1, height, width)
