"""Occlusion: slide a window over the input, set it to a baseline, and record how F drops.

Our own implementation of Captum's Occlusion semantics (same windows, same attributions: each
feature gets the mean output drop over the windows that cover it), built for speed: many windows
are occluded in one forward pass of up to ``internal_batch_size`` images, and the windows are cut
with slices instead of one full-size mask tensor per window.
"""

from __future__ import annotations

import itertools
import math

import torch

from mlflow_xai.errors import ProbeError
from mlflow_xai.methods.base import Attribution, AttributionMethod, register
from mlflow_xai.model import ModelHandle

Window = tuple[slice, ...]


def occlusion_windows(
    sample_shape: tuple[int, ...], window: tuple[int, ...], strides: tuple[int, ...]
) -> list[Window]:
    """Window positions as Captum places them: ceil((size - window) / stride) + 1 per axis, the
    last one clipped at the input's edge."""
    per_axis = []
    for size, w, s in zip(sample_shape, window, strides, strict=True):
        count = math.ceil((size - w) / s) + 1
        per_axis.append([slice(k * s, min(k * s + w, size)) for k in range(count)])
    return list(itertools.product(*per_axis))


def occlusion(
    scores,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    window: tuple[int, ...],
    strides: tuple[int, ...],
    baseline: float,
    windows_per_pass: int,
) -> torch.Tensor:
    """Attributions of ``x`` (B, *S): mean of F(x) - F(x with the window occluded) over covering windows."""
    batch, sample_shape = x.shape[0], tuple(x.shape[1:])
    windows = occlusion_windows(sample_shape, window, strides)
    weights = torch.zeros(sample_shape, dtype=x.dtype, device=x.device)
    for win in windows:
        weights[win] += 1
    total = torch.zeros_like(x)
    with torch.no_grad():
        reference = scores(x).gather(1, target.view(-1, 1)).squeeze(1)
        for first in range(0, len(windows), windows_per_pass):
            chunk = windows[first : first + windows_per_pass]
            occluded = x.unsqueeze(0).repeat(len(chunk), *([1] * x.ndim))
            for j, win in enumerate(chunk):
                occluded[(j, slice(None), *win)] = baseline
            out = scores(occluded.view(len(chunk) * batch, *sample_shape))
            out = out.gather(1, target.repeat(len(chunk)).view(-1, 1)).view(len(chunk), batch)
            drop = reference.unsqueeze(0) - out
            for j, win in enumerate(chunk):
                total[(slice(None), *win)] += drop[j].view(batch, *([1] * len(sample_shape)))
    return total / weights


@register("occlusion")
class Occlusion(AttributionMethod):
    def check_input(self, handle: ModelHandle, x: torch.Tensor) -> None:
        super().check_input(handle, x)
        self._check_window(tuple(x.shape[1:]))

    def _check_window(self, sample_shape: tuple[int, ...]) -> None:
        window = tuple(self.config.sliding_window_shapes)
        if len(window) != len(sample_shape):
            raise ProbeError(
                f"methods.occlusion.sliding_window_shapes {list(window)} has {len(window)} entries "
                f"but each input has shape {list(sample_shape)}; give one entry per input axis"
            )
        if any(w > s for w, s in zip(window, sample_shape, strict=True)):
            raise ProbeError(
                f"methods.occlusion.sliding_window_shapes {list(window)} is larger than the input "
                f"{list(sample_shape)} on some axis; every window entry must be <= the input's"
            )

    def _attribute(self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor) -> Attribution:
        cfg = self.config
        self._check_window(tuple(x.shape[1:]))
        window, strides = tuple(cfg.sliding_window_shapes), tuple(cfg.strides)
        per_pass = cfg.perturbations_per_eval or max(1, cfg.internal_batch_size // max(1, len(x)))
        values = occlusion(
            handle.scores,
            x,
            target,
            window=window,
            strides=strides,
            baseline=cfg.baseline,
            windows_per_pass=per_pass,
        )
        return Attribution(values)
