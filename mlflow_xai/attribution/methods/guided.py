"""Backward-pass rewriting and class-activation methods: guided backprop, deconvolution, GradCAM."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import Deconvolution as CaptumDeconvolution
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import GuidedGradCam as CaptumGuidedGradCam
from captum.attr import LayerGradCam as CaptumLayerGradCam

from mlflow_xai.attribution.methods._captum import (
    CaptumGradientMethod,
    ScoresModule,
    find_layer,
    quiet_captum,
    require_relu_modules,
)
from mlflow_xai.attribution.methods.base import Attribution, AttributionContext, AttributionMethod, register
from mlflow_xai.errors import ModelError
from mlflow_xai.model.handle import ModelHandle


@register("guided_backprop")
class GuidedBackprop(CaptumGradientMethod):
    """Gradients with every nn.ReLU passing back only positive gradients at positive inputs."""

    needs_hooks = True

    def prepare(self, handle: ModelHandle) -> None:
        require_relu_modules(handle.module, self.name)

    def algorithm(
        self, handle: ModelHandle, x: torch.Tensor, context: AttributionContext
    ) -> tuple[Any, dict[str, Any]]:
        return CaptumGuidedBackprop(ScoresModule(handle)), {}


@register("deconvolution")
class Deconvolution(CaptumGradientMethod):
    """Gradients with every nn.ReLU applied to the gradient instead of gated by the input."""

    needs_hooks = True

    def prepare(self, handle: ModelHandle) -> None:
        require_relu_modules(handle.module, self.name)

    def algorithm(
        self, handle: ModelHandle, x: torch.Tensor, context: AttributionContext
    ) -> tuple[Any, dict[str, Any]]:
        return CaptumDeconvolution(ScoresModule(handle)), {}


@register("guided_gradcam")
class GuidedGradCam(CaptumGradientMethod):
    """Guided backprop times the layer's GradCAM map resized to the input."""

    needs_hooks = True

    def prepare(self, handle: ModelHandle) -> None:
        require_relu_modules(handle.module, self.name)
        find_layer(handle.module, self.config.layer, self.name)

    def check_input(self, handle: ModelHandle, x: torch.Tensor) -> None:
        super().check_input(handle, x)
        _attribute_one_sample(self, handle, x)

    def algorithm(
        self, handle: ModelHandle, x: torch.Tensor, context: AttributionContext
    ) -> tuple[Any, dict[str, Any]]:
        cfg = self.config
        layer = find_layer(handle.module, cfg.layer, self.name)
        kwargs = {
            "interpolate_mode": cfg.interpolate_mode,
            "attribute_to_layer_input": cfg.attribute_to_layer_input,
        }
        return CaptumGuidedGradCam(ScoresModule(handle), layer), kwargs


@register("layer_gradcam")
class LayerGradCam(AttributionMethod):
    """GradCAM of one layer, resized to the input's spatial size and repeated over its channels.

    The result has the input's shape, so it is stored and checked like any other attribution; every
    channel of a pixel carries the same value.
    """

    needs_hooks = True
    needs_gradients = True

    def check_model(self, handle: ModelHandle) -> None:
        super().check_model(handle)
        find_layer(handle.module, self.config.layer, self.name)

    def check_input(self, handle: ModelHandle, x: torch.Tensor) -> None:
        super().check_input(handle, x)
        _attribute_one_sample(self, handle, x)

    def _attribute(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, context: AttributionContext
    ) -> Attribution:
        cfg = self.config
        layer = find_layer(handle.module, cfg.layer, self.name)
        with quiet_captum():
            cam = CaptumLayerGradCam(handle.scores, layer).attribute(
                x,
                target=target,
                relu_attributions=cfg.relu_attributions,
                attribute_to_layer_input=cfg.attribute_to_layer_input,
            )
        if not isinstance(cam, torch.Tensor) or cam.ndim != x.ndim:
            shape = list(cam.shape) if isinstance(cam, torch.Tensor) else type(cam).__name__
            raise ModelError(
                f"methods.layer_gradcam.layer {cfg.layer!r} gives a map of shape {shape} for inputs "
                f"of shape {list(x.shape)}; choose a layer whose output keeps the input's spatial "
                "axes (a convolution, not a pooled or linear layer)"
            )
        return Attribution(_resize(cam, x, cfg.interpolate_mode).detach())


def _attribute_one_sample(method: AttributionMethod, handle: ModelHandle, x: torch.Tensor) -> None:
    """Whether the layer's map fits the input shows only on a pass: one sample, class 0."""
    one = x[:1]
    target = torch.zeros(1, dtype=torch.long, device=one.device)
    method._attribute(handle, one, target, AttributionContext.first(1))


def _resize(cam: torch.Tensor, x: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, 1, *layer_spatial) -> the shape of ``x``, by interpolation then channel broadcast."""
    size = tuple(x.shape[2:])
    if tuple(cam.shape[2:]) != size:
        corners = {"align_corners": False} if mode in {"linear", "bilinear", "bicubic", "trilinear"} else {}
        try:
            cam = F.interpolate(cam, size=size, mode=mode, **corners)
        except (NotImplementedError, ValueError) as exc:
            raise ModelError(
                f"methods.layer_gradcam.interpolate_mode {mode!r} cannot resize a map of shape "
                f"{list(cam.shape)} to {list(size)}: {exc}"
            ) from None
    return cam.expand_as(x).contiguous()
