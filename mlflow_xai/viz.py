"""Figures for reviewers: original / heat map / overlay sheets, as Captum's visualiser lays them out."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def is_image_shape(shape: tuple[int, ...]) -> bool:
    """(C, H, W) with 1 or 3 channels, or (H, W)."""
    return (len(shape) == 3 and shape[0] in (1, 3)) or len(shape) == 2


def _to_display(image: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) in any range -> (H, W, 3) in [0, 1] for imshow."""
    img = image.astype(np.float64)
    if img.ndim == 3:
        img = np.moveaxis(img, 0, -1)
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, axis=-1)
    else:
        img = np.stack([img] * 3, axis=-1)
    lo, hi = img.min(), img.max()
    if lo < 0.0 or hi > 1.0:  # normalised inputs: rescale for display only
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img


def _channel_sum(attr: np.ndarray) -> np.ndarray:
    a = attr.astype(np.float64)
    return a.sum(axis=0) if a.ndim == 3 else a


def attribution_sheet(
    images: np.ndarray,
    attributions: np.ndarray,
    path: Path,
    *,
    title: str,
    captions: list[str],
    masks: np.ndarray | None = None,
) -> Path:
    """One row per sample: the input, the signed heat map, and |attribution| over the input."""
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.4 * n + 0.6), squeeze=False)
    fig.suptitle(title, fontsize=11)
    for i in range(n):
        image = _to_display(images[i])
        heat = _channel_sum(attributions[i])
        bound = float(np.abs(heat).max())
        ax_img, ax_heat, ax_overlay = axes[i]
        ax_img.imshow(image)
        ax_img.set_ylabel(captions[i], fontsize=8)
        # An all-zero map is drawn as such: a flat map on a symmetric unit scale.
        scale = bound if bound > 0 else 1.0
        im = ax_heat.imshow(heat, cmap="RdBu_r", vmin=-scale, vmax=scale)
        fig.colorbar(im, ax=ax_heat, fraction=0.046, pad=0.04)
        ax_overlay.imshow(image.mean(axis=-1), cmap="gray", vmin=0.0, vmax=1.0)
        ax_overlay.imshow(np.abs(heat), cmap="inferno", alpha=0.6, vmin=0.0, vmax=scale)
        if masks is not None:
            for ax in (ax_img, ax_heat, ax_overlay):
                ax.contour(masks[i].astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        if i == 0:
            ax_img.set_title("input", fontsize=9)
            ax_heat.set_title("attribution (signed, channel sum)", fontsize=9)
            ax_overlay.set_title("|attribution| over input", fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
