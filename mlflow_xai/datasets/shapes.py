"""A seeded synthetic "shapes" image set with a ground-truth object mask for every image.

Each image is a single filled shape (square, circle, triangle or cross) of random size, colour and
position on a noisy background. The class depends only on the shape, so a good attribution method
should put its mass on the object, which the mask lets a test measure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPE_CLASSES: tuple[str, ...] = ("square", "circle", "triangle", "cross")


@dataclass(frozen=True)
class ShapesData:
    images: np.ndarray  # (N, 3, S, S) float32 in [0, 1]
    labels: np.ndarray  # (N,) int64
    masks: np.ndarray  # (N, S, S) bool, True on the object
    ids: np.ndarray  # (N,) str, stable sample ids

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: slice | np.ndarray) -> ShapesData:
        return ShapesData(self.images[index], self.labels[index], self.masks[index], self.ids[index])


def _shape_mask(kind: str, size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = yy - cy, xx - cx
    if kind == "square":
        return (np.abs(dy) <= radius * 0.85) & (np.abs(dx) <= radius * 0.85)
    if kind == "circle":
        return dy**2 + dx**2 <= radius**2
    if kind == "triangle":
        # Upward triangle: apex at the top, base at the bottom of the bounding box.
        top, bottom = cy - radius, cy + radius
        half_width = (yy - top) / (2.0 * radius) * radius
        return (yy >= top) & (yy <= bottom) & (np.abs(dx) <= half_width)
    if kind == "cross":
        arm = max(radius * 0.3, 1.0)
        inside = (np.abs(dy) <= radius) & (np.abs(dx) <= radius)
        return inside & ((np.abs(dy) <= arm) | (np.abs(dx) <= arm))
    raise ValueError(f"unknown shape kind {kind!r}; allowed: {', '.join(SHAPE_CLASSES)}")


def make_shapes(n: int, *, size: int = 32, seed: int = 0, noise: float = 0.08) -> ShapesData:
    """Generate ``n`` images of ``size`` x ``size`` pixels, deterministically from ``seed``."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    rng = np.random.default_rng(seed)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=bool)
    labels = rng.integers(0, len(SHAPE_CLASSES), size=n).astype(np.int64)
    for i in range(n):
        radius = rng.uniform(size * 0.16, size * 0.34)
        cy, cx = rng.uniform(radius + 1, size - radius - 1, size=2)
        mask = _shape_mask(SHAPE_CLASSES[labels[i]], size, cy, cx, radius)
        background = rng.uniform(0.1, 0.6, size=(3, 1, 1))
        colour = rng.uniform(0.0, 1.0, size=(3, 1, 1))
        # Keep the object visible: push its colour away from the background's mean level.
        if abs(colour.mean() - background.mean()) < 0.25:
            colour = np.clip(colour + np.sign(colour.mean() - background.mean() + 1e-6) * 0.35, 0.0, 1.0)
        img = np.where(mask[None], colour, background) + rng.normal(0.0, noise, size=(3, size, size))
        images[i] = np.clip(img, 0.0, 1.0)
        masks[i] = mask
    ids = np.array([f"shape-{seed}-{i:05d}" for i in range(n)])
    return ShapesData(images, labels, masks, ids)
