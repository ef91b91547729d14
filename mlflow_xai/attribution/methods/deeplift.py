"""DeepLift (rescale rule) and DeepLiftShap, both through Captum's module hooks."""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import DeepLift as CaptumDeepLift
from captum.attr import DeepLiftShap as CaptumDeepLiftShap

from mlflow_xai.attribution.baselines import make_baseline
from mlflow_xai.attribution.methods._captum import CaptumGradientMethod, ScoresModule, quiet_captum
from mlflow_xai.attribution.methods.base import (
    Attribution,
    AttributionContext,
    BaselineDistributionMethod,
    register,
)
from mlflow_xai.model.handle import ModelHandle


@register("deeplift")
class DeepLift(CaptumGradientMethod):
    """Summation to delta: sum(attributions) = F(x) - F(x'), exact up to float error on networks of
    linear layers, ReLUs and average pooling. Captum's max-pool rule keeps it only where x and x'
    share each window's maximum; elsewhere the completeness check will report the gap.

    The model's non-linearities must be distinct ``nn`` modules (a ReLU module called twice, or a
    functional relu, breaks the rule); the output transform is a module so it is hooked too.
    """

    needs_hooks = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.has_completeness = config.multiply_by_inputs

    def algorithm(
        self, handle: ModelHandle, x: torch.Tensor, context: AttributionContext
    ) -> tuple[Any, dict[str, Any]]:
        cfg = self.config
        explainer = CaptumDeepLift(
            ScoresModule(handle), multiply_by_inputs=cfg.multiply_by_inputs, eps=cfg.eps
        )
        baselines = make_baseline(cfg.baseline, x, probe_mean=context.probe_mean, positions=context.positions)
        return explainer, {"baselines": baselines}

    def _attribute(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, context: AttributionContext
    ) -> Attribution:
        explainer, kwargs = self.algorithm(handle, x, context)
        with quiet_captum():
            values = explainer.attribute(x, target=target, **kwargs)
        with torch.no_grad():
            at_input = handle.explained(x, target)
            at_baseline = handle.explained(kwargs["baselines"], target)
        return Attribution(self.finish(values, x).detach(), at_input, at_baseline)


@register("deeplift_shap")
class DeepLiftShap(BaselineDistributionMethod):
    """DeepLift averaged over a baseline distribution; F(x') is the mean output over the baselines."""

    needs_hooks = True

    def explain(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, baselines: torch.Tensor
    ) -> torch.Tensor:
        if baselines.shape[0] == 1:  # Captum wants a distribution of at least two baselines
            baselines = baselines.expand(2, *baselines.shape[1:])
        explainer = CaptumDeepLiftShap(
            ScoresModule(handle), multiply_by_inputs=self.config.multiply_by_inputs
        )
        with quiet_captum():
            return explainer.attribute(x, baselines=baselines, target=target)
