"""Occlusion through Captum, with batched perturbations."""

from __future__ import annotations

import torch
from captum.attr import Occlusion as CaptumOcclusion

from mlflow_xai.errors import ProbeError
from mlflow_xai.methods.base import Attribution, AttributionMethod, register
from mlflow_xai.model import ModelHandle


@register("occlusion")
class Occlusion(AttributionMethod):
    def _attribute(self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor) -> Attribution:
        cfg = self.config
        window, strides = tuple(cfg.sliding_window_shapes), tuple(cfg.strides)
        sample_shape = tuple(x.shape[1:])
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
        with torch.no_grad():
            values = CaptumOcclusion(handle.scores).attribute(
                x,
                sliding_window_shapes=window,
                strides=strides,
                baselines=cfg.baseline,
                target=target,
                perturbations_per_eval=cfg.perturbations_per_eval,
            )
        return Attribution(values.detach())
