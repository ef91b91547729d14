"""Parameters of Occlusion (``methods.occlusion``).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from mlflow_xai.strict import PositiveInt, _Strict


class OcclusionConfig(_Strict):
    """Slide a window over the input, set it to ``baseline`` and record how the output drops.

    ``sliding_window_shapes: auto`` (the default) fits any input: all channels, and a quarter of
    each spatial side (rounded up), so an image of any size gets 7 x 7 windows; a 1-D (tabular) row
    is occluded one feature at a time. ``strides: auto`` is half the window on each axis (rounded
    up), the whole axis where the window spans it (the channels), and one feature for a 1-D row.
    ``mlflow-xai validate-config --input-shape C,H,W`` shows what they resolve to.
    """

    sliding_window_shapes: list[PositiveInt] | Literal["auto"] = Field(
        default="auto", description="window per input axis (channels first), or 'auto' (from the input)"
    )
    strides: list[PositiveInt] | Literal["auto"] = Field(
        default="auto", description="window step per input axis, or 'auto' (half the window)"
    )
    baseline: float = 0.0
    perturbations_per_eval: PositiveInt | None = Field(
        default=None,
        description="windows occluded per forward pass; null = as many as internal_batch_size allows",
    )
    internal_batch_size: PositiveInt = Field(
        default=128, description="occluded images per forward pass (when perturbations_per_eval is null)"
    )

    @model_validator(mode="after")
    def _same_rank(self) -> OcclusionConfig:
        window, strides = self.sliding_window_shapes, self.strides
        if window == "auto" or strides == "auto":
            return self  # checked against the input's shape when it is known
        check_occlusion_windows(window, strides)
        return self

    def resolve(self, sample_shape: tuple[int, ...]) -> tuple[list[int], list[int]]:
        """The window and strides for inputs of ``sample_shape`` (one input, channels first)."""
        window = self.sliding_window_shapes
        if window == "auto":
            if len(sample_shape) == 1:
                window = [1]
            else:
                window = [sample_shape[0], *(math.ceil(side / 4) for side in sample_shape[1:])]
        strides = self.strides
        if strides == "auto":  # half the window; a window as long as its axis has one position
            sides = sample_shape if len(sample_shape) == len(window) else (0,) * len(window)
            strides = [w if w >= side else math.ceil(w / 2) for w, side in zip(window, sides, strict=True)]
        return list(window), list(strides)


def check_occlusion_windows(window: list[int], strides: list[int]) -> None:
    """Refuse windows and strides of different lengths, and strides longer than their window."""
    if len(strides) != len(window):
        raise ValueError(
            f"strides {strides} and sliding_window_shapes {window} "
            "must have the same length (one entry per input dimension)"
        )
    pairs = zip(strides, window, strict=True)
    wider = [axis for axis, (stride, size) in enumerate(pairs) if stride > size]
    if wider:
        raise ValueError(
            f"strides {strides} exceed sliding_window_shapes {window} on "
            f"axis {', '.join(map(str, wider))}: features between two windows would be covered by "
            "none and get no attribution; each stride must be <= its window entry"
        )
