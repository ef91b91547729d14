"""Plain-gradient methods: Saliency, Input x Gradient, GradientShap."""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import GradientShap as CaptumGradientShap
from captum.attr import InputXGradient as CaptumInputXGradient
from captum.attr import Saliency as CaptumSaliency

from mlflow_xai.attribution.methods._captum import CaptumGradientMethod, quiet_captum
from mlflow_xai.attribution.methods.base import AttributionContext, BaselineDistributionMethod, register
from mlflow_xai.model.handle import ModelHandle


@register("saliency")
class Saliency(CaptumGradientMethod):
    """dF/dx (its absolute value unless ``abs: false``)."""

    def algorithm(
        self, handle: ModelHandle, x: torch.Tensor, context: AttributionContext
    ) -> tuple[Any, dict[str, Any]]:
        return CaptumSaliency(handle.scores), {"abs": self.config.abs}


@register("input_x_gradient")
class InputXGradient(CaptumGradientMethod):
    """x * dF/dx: a one-step path method against the zero baseline."""

    def algorithm(
        self, handle: ModelHandle, x: torch.Tensor, context: AttributionContext
    ) -> tuple[Any, dict[str, Any]]:
        return CaptumInputXGradient(handle.scores), {}


@register("gradient_shap")
class GradientShap(BaselineDistributionMethod):
    """Expected gradients: E[(x + noise - x') * dF/dx at a random point between them].

    With ``multiply_by_inputs`` it claims completeness against the mean baseline output, but only in
    expectation over its random draws: the per-sample error shrinks like 1/sqrt(n_samples), so a
    tight completeness tolerance will flag it even when it works as designed.
    """

    random_draws = True  # its points between input and baseline, and the noise

    def explain(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, baselines: torch.Tensor
    ) -> torch.Tensor:
        cfg = self.config
        explainer = CaptumGradientShap(handle.scores, multiply_by_inputs=cfg.multiply_by_inputs)
        with quiet_captum():
            return explainer.attribute(
                x, baselines=baselines, n_samples=cfg.n_samples, stdevs=cfg.stdevs, target=target
            )
