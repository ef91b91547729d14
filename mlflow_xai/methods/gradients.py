"""Plain-gradient methods: Saliency, Input x Gradient, GradientShap."""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import GradientShap as CaptumGradientShap
from captum.attr import InputXGradient as CaptumInputXGradient
from captum.attr import Saliency as CaptumSaliency

from mlflow_xai.baselines import make_baseline_distribution
from mlflow_xai.methods._captum import CaptumGradientMethod, quiet_captum, seeded
from mlflow_xai.methods.base import Attribution, AttributionMethod, register
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
class GradientShap(AttributionMethod):
    """Expected gradients: E[(x + noise - x') * dF/dx at a random point between them].

    With ``multiply_by_inputs`` it claims completeness against the mean baseline output, but only in
    expectation over its random draws: the per-sample error shrinks like 1/sqrt(n_samples), so a
    tight completeness tolerance will flag it even when it works as designed.
    """

    needs_gradients = True
    baseline_distribution = True
    probe_mean: torch.Tensor | None = None  # set by the engine for `baseline: probe_mean`

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.has_completeness = config.multiply_by_inputs

    def _attribute(self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor) -> Attribution:
        cfg = self.config
        baselines = make_baseline_distribution(cfg.baseline, x, cfg.n_baselines, probe_mean=self.probe_mean)
        explainer = CaptumGradientShap(handle.scores, multiply_by_inputs=cfg.multiply_by_inputs)
        with seeded(cfg.seed, x.device), quiet_captum():
            values = explainer.attribute(
                x, baselines=baselines, n_samples=cfg.n_samples, stdevs=cfg.stdevs, target=target
            )
        with torch.no_grad():
            at_input = handle.explained(x, target)
            at_baseline = handle.scores(baselines)[:, target].mean(dim=0)
        return Attribution(values.detach(), at_input, at_baseline)
