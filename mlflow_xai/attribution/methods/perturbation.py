"""Perturbation methods over groups of features: ablation, Shapley sampling, KernelSHAP, LIME.

All four switch groups of pixels (a ``feature_mask``) between the input and the baseline and watch
the explained output; they need no gradients and no hooks, so they also explain exported graphs.
"""

from __future__ import annotations

from typing import Any

import torch
from captum._utils.models.linear_model import SkLearnLasso, SkLearnLinearRegression, SkLearnRidge
from captum.attr import FeatureAblation as CaptumFeatureAblation
from captum.attr import KernelShap as CaptumKernelShap
from captum.attr import Lime as CaptumLime
from captum.attr import ShapleyValueSampling as CaptumShapleyValueSampling
from captum.attr._core.lime import get_exp_kernel_similarity_function

from mlflow_xai.attribution.baselines import make_baseline
from mlflow_xai.attribution.methods._captum import check_shape, quiet_captum
from mlflow_xai.attribution.methods.base import (
    Attribution,
    AttributionContext,
    AttributionMethod,
    per_sample_seeded,
    register,
)
from mlflow_xai.attribution.methods.masks import feature_mask
from mlflow_xai.model.handle import ModelHandle


class _GroupPerturbation(AttributionMethod):
    random: bool = True  # draws samples: run one sample at a time, seeded by (seed, position)

    def explainer(self, handle: ModelHandle) -> Any:
        raise NotImplementedError

    def extra_arguments(self) -> dict[str, Any]:
        return {"n_samples": self.config.n_samples}

    def _attribute(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, context: AttributionContext
    ) -> Attribution:
        cfg = self.config
        baselines = make_baseline(cfg.baseline, x, probe_mean=context.probe_mean, positions=context.positions)
        mask = feature_mask(cfg.feature_mask, x)
        return Attribution(self._explain(handle, x, baselines, target, mask, context))

    def _explain(
        self,
        handle: ModelHandle,
        x: torch.Tensor,
        baselines: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        context: AttributionContext,
    ) -> torch.Tensor:
        """The explainer's attributions of ``x`` with ``mask``'s groups switched to ``baselines``."""
        cfg = self.config
        explainer = self.explainer(handle)

        def explain(rows: slice) -> torch.Tensor:
            return explainer.attribute(
                x[rows],
                baselines=baselines[rows],
                target=target[rows],
                feature_mask=mask[rows],
                perturbations_per_eval=cfg.perturbations_per_eval,
                **self.extra_arguments(),
            )

        with torch.no_grad(), quiet_captum():  # Lime/KernelShap warn about one surrogate per sample
            if self.random:
                values = per_sample_seeded(
                    context, cfg.seed, self.name, x.device, lambda i: explain(slice(i, i + 1))
                )
            else:
                values = explain(slice(None))
        return check_shape(values, x, self.name).to(x.dtype).detach()


@register("feature_ablation")
class FeatureAblation(_GroupPerturbation):
    """F(x) - F(x with one group set to the baseline), spread over the group's features."""

    random = False

    def explainer(self, handle: ModelHandle) -> Any:
        return CaptumFeatureAblation(handle.scores)

    def extra_arguments(self) -> dict[str, Any]:
        return {}


@register("shapley_value_sampling")
class ShapleyValueSampling(_GroupPerturbation):
    """Shapley values of the groups estimated from ``n_samples`` random orderings."""

    def explainer(self, handle: ModelHandle) -> Any:
        return CaptumShapleyValueSampling(handle.scores)


@register("kernel_shap")
class KernelShap(_GroupPerturbation):
    """Shapley values of the groups from a weighted linear fit to ``n_samples`` random coalitions."""

    def explainer(self, handle: ModelHandle) -> Any:
        return CaptumKernelShap(handle.scores)


@register("lime")
class Lime(_GroupPerturbation):
    """A sparse linear surrogate of the groups fitted near the input, weighted by similarity."""

    def explainer(self, handle: ModelHandle) -> Any:
        cfg = self.config
        if cfg.interpretable_model == "lasso":
            surrogate = SkLearnLasso(alpha=cfg.alpha)
        elif cfg.interpretable_model == "ridge":
            surrogate = SkLearnRidge(alpha=cfg.alpha)
        else:
            surrogate = SkLearnLinearRegression()
        similarity = get_exp_kernel_similarity_function(cfg.distance_mode, cfg.kernel_width)
        return CaptumLime(handle.scores, interpretable_model=surrogate, similarity_func=similarity)
