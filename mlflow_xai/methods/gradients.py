"""Plain-gradient methods: Saliency, Input x Gradient, GradientShap."""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import GradientShap as CaptumGradientShap
from captum.attr import InputXGradient as CaptumInputXGradient
from captum.attr import Saliency as CaptumSaliency

from mlflow_xai.methods._captum import CaptumGradientMethod, quiet_captum, seeded
from mlflow_xai.methods.base import Attribution, BaselineDistributionMethod, register
from mlflow_xai.model import ModelHandle


@register("saliency")
class Saliency(CaptumGradientMethod):
    """dF/dx (its absolute value unless ``abs: false``)."""

    def algorithm(self, handle: ModelHandle, x: torch.Tensor) -> tuple[Any, dict[str, Any]]:
        return CaptumSaliency(handle.scores), {"abs": self.config.abs}


@register("input_x_gradient")
class InputXGradient(CaptumGradientMethod):
    """x * dF/dx: a one-step path method against the zero baseline."""

    def algorithm(self, handle: ModelHandle, x: torch.Tensor) -> tuple[Any, dict[str, Any]]:
        return CaptumInputXGradient(handle.scores), {}


@register("gradient_shap")
class GradientShap(BaselineDistributionMethod):
    """Expected gradients: E[(x + noise - x') * dF/dx at a random point between them].

    With ``multiply_by_inputs`` it claims completeness against the mean baseline output, but only in
    expectation over its random draws: the per-sample error shrinks like 1/sqrt(n_samples), so a
    tight completeness tolerance will flag it even when it works as designed.
    """

    def _attribute(self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor) -> Attribution:
        cfg = self.config
        baselines = self.baselines(x)
        explainer = CaptumGradientShap(handle.scores, multiply_by_inputs=cfg.multiply_by_inputs)
        with seeded(cfg.seed, x.device), quiet_captum():
            values = explainer.attribute(
                x, baselines=baselines, n_samples=cfg.n_samples, stdevs=cfg.stdevs, target=target
            )
        return self.with_outputs(handle, x, target, values, baselines)
