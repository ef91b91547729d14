"""Occlusion: slide a window over the input, set it to a baseline, and record how F drops.

Our own implementation of Captum's Occlusion semantics (same windows, same attributions: each
feature gets the mean output drop over the windows that cover it), built for speed: many windows
are occluded in one forward pass of up to ``internal_batch_size`` images, and window masks are built
per pass from per-axis intervals instead of one full-size mask tensor per window.
"""

from __future__ import annotations

import itertools
import math

import torch

from mlflow_xai.attribution.methods.base import Attribution, AttributionContext, AttributionMethod, register
from mlflow_xai.attribution.parameters import check_occlusion_windows
from mlflow_xai.errors import ProbeError
from mlflow_xai.model.handle import ModelHandle

_BAND_ELEMENTS = 1 << 22  # an axis's band matrix is built in blocks of at most this size


def _positions(size: int, w: int, s: int) -> list[int]:
    """Window starts on one axis as Captum places them: ceil((size - w) / s) + 1 of them."""
    return [k * s for k in range(math.ceil((size - w) / s) + 1)]


def _occluded(x: torch.Tensor, lows: torch.Tensor, window: tuple[int, ...], baseline: float) -> torch.Tensor:
    """``x`` (B, *S) once per row of ``lows`` (n, ndim) window starts, with that window set to the
    baseline: (n * B, *S). The mask is a product of per-axis intervals, broadcast to (n, 1, *S)."""
    n, sample_shape = len(lows), x.shape[1:]
    cover = torch.ones((), dtype=x.dtype, device=x.device)
    for axis, (size, w) in enumerate(zip(sample_shape, window, strict=True)):
        pos = torch.arange(size, device=x.device).view([size] + [1] * (len(sample_shape) - 1 - axis))
        low = lows[:, axis].view([n] + [1] * len(sample_shape))
        cover = cover * ((pos >= low) & (pos < low + w)).to(x.dtype)
    # Captum's blend x * (1 - cover) + baseline * cover, exact for a 0/1 cover; in place, so only
    # one mask is held beside the occluded batch.
    keep = cover.unsqueeze(1).neg_().add_(1)
    occluded = x.unsqueeze(0) * keep
    occluded += keep.sub_(1).mul_(-baseline)
    return occluded.view(n * len(x), *sample_shape)


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
    """Attributions of ``x`` (B, *S): mean of F(x) - F(x with the window occluded) over covering windows.

    Slot 0 is ``x`` itself and slot i the i-th window, in row-major order of the per-axis positions
    (``_positions``, the last window on an axis clipped at the input's edge); a pass runs at most
    ``windows_per_pass`` slots. A window's mask is the product of one interval per axis, so each pass
    builds its masks by broadcasting, and the drops are spread back with one band matrix per axis:
    no tensor holds a full-size mask per window. ``target`` (B,) gives (B, *S); ``target`` (B, K)
    gives (B, K, *S) from the same passes, each class read off the scores of every occluded image.
    """
    classes = target.view(len(x), -1)  # (B, K)
    batch, sample_shape = x.shape[0], tuple(x.shape[1:])
    device, dtype = x.device, x.dtype
    starts = [_positions(*a) for a in zip(sample_shape, window, strides, strict=True)]
    # (slots, ndim) window starts; slot 0 starts past the end of every axis and covers nothing.
    lows = torch.tensor([sample_shape, *itertools.product(*starts)], device=device)
    slots = len(lows)
    per_pass = math.ceil(slots / math.ceil(slots / windows_per_pass))  # as many passes, evened out
    outputs = []
    with torch.no_grad():
        for first in range(0, slots, per_pass):
            count = min(per_pass, slots - first)
            out = scores(_occluded(x, lows[first : first + count], window, baseline))
            outputs.append(out.gather(1, classes.repeat(count, 1)).view(count, batch * classes.shape[1]))
        values = torch.cat(outputs)
        # Contract each axis's window index with its (windows, size) band, 1 where the window holds the
        # feature; tensordot appends the feature axis, so after the last axis they are back in order.
        # Rows are (sample, class) pairs from here on.
        total = (values[0] - values[1:]).t().reshape(-1, *map(len, starts)).to(dtype)
        weights = torch.ones((), dtype=dtype, device=device)
        for size, w, axis_starts in zip(sample_shape, window, starts, strict=True):
            pos = torch.arange(size, device=device)
            spread, covering = 0, 0
            rows = max(1, _BAND_ELEMENTS // size)
            for k in range(0, len(axis_starts), rows):
                low = torch.tensor(axis_starts[k : k + rows], device=device).view(-1, 1)
                band = ((pos >= low) & (pos < low + w)).to(dtype)
                spread = spread + torch.tensordot(total.narrow(1, k, len(band)), band, dims=([1], [0]))
                covering = covering + band.sum(0)
            total = spread
            weights = torch.tensordot(weights, covering, dims=0)  # windows covering each feature
    return (total / weights).view(*target.shape, *sample_shape)


@register("occlusion")
class Occlusion(AttributionMethod):
    def check_input(self, handle: ModelHandle, x: torch.Tensor) -> None:
        super().check_input(handle, x)
        self.windows(tuple(x.shape[1:]))

    def windows(self, sample_shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The window and strides for this input shape (``auto`` resolved), or a ProbeError."""
        window, strides = self.config.resolve(sample_shape)
        if len(window) != len(sample_shape):
            raise ProbeError(
                f"methods.occlusion.sliding_window_shapes {list(window)} has {len(window)} entries "
                f"but each input has shape {list(sample_shape)}; give one entry per input axis, or "
                "'auto'"
            )
        if any(w > s for w, s in zip(window, sample_shape, strict=True)):
            raise ProbeError(
                f"methods.occlusion.sliding_window_shapes {list(window)} is larger than the input "
                f"{list(sample_shape)} on some axis; every window entry must be <= the input's"
            )
        try:
            check_occlusion_windows(window, strides)
        except ValueError as exc:
            raise ProbeError(f"methods.occlusion: {exc}") from None
        return tuple(window), tuple(strides)

    def _attribute(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, context: AttributionContext
    ) -> Attribution:
        cfg = self.config
        window, strides = self.windows(tuple(x.shape[1:]))
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

    def attribute_targets(
        self,
        handle: ModelHandle,
        x: torch.Tensor,
        targets: torch.Tensor,
        context: AttributionContext | None = None,
    ) -> list[Attribution]:
        """Every target from the same occluded images: one set of forward passes for all K classes."""
        self.check_model(handle)
        shared = self._attribute(handle, x, targets, context)
        return [Attribution(shared.values[:, k]) for k in range(targets.shape[1])]
