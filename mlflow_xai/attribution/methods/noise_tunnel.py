"""NoiseTunnel: SmoothGrad, SmoothGrad-squared or VarGrad over any Captum gradient method."""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import NoiseTunnel as CaptumNoiseTunnel

from mlflow_xai.attribution.methods._captum import CaptumGradientMethod, quiet_captum
from mlflow_xai.attribution.methods.base import (
    Attribution,
    AttributionContext,
    AttributionMethod,
    build,
    per_sample_seeded,
    register,
)
from mlflow_xai.model.handle import ModelHandle


@register("noise_tunnel")
class NoiseTunnel(AttributionMethod):
    """The wrapped method's attributions over ``nt_samples`` noisy copies of each input, aggregated
    by ``nt_type`` (mean, mean of squares, or variance). It needs hooks when the wrapped method does.
    """

    needs_gradients = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        inner = build(config.method, config.wrapped_config())
        if not isinstance(inner, CaptumGradientMethod):  # the config allows only such methods
            raise TypeError(f"noise_tunnel cannot wrap {config.method!r}: not a Captum gradient method")
        self.inner = inner
        self.needs_hooks = inner.needs_hooks

    def check_model(self, handle: ModelHandle) -> None:
        super().check_model(handle)
        self.inner.check_model(handle)

    def check_input(self, handle: ModelHandle, x: torch.Tensor) -> None:
        super().check_input(handle, x)
        self.inner.check_baseline(x)

    def _attribute(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, context: AttributionContext
    ) -> Attribution:
        cfg = self.config
        self.inner.prepare(handle)

        def one(i: int) -> torch.Tensor:
            explainer, kwargs = self.inner.algorithm(handle, x[i : i + 1], context.rows(i, i + 1))
            with quiet_captum():
                return CaptumNoiseTunnel(explainer).attribute(
                    x[i : i + 1],
                    nt_type=cfg.nt_type,
                    nt_samples=cfg.nt_samples,
                    nt_samples_batch_size=cfg.nt_samples_batch_size,
                    stdevs=cfg.stdevs,
                    draw_baseline_from_distrib=cfg.draw_baseline_from_distrib,
                    target=target[i : i + 1],
                    **kwargs,
                )

        # One sample at a time, its noise drawn from (seed, position): see mlflow_xai.seeding.
        values = per_sample_seeded(context, cfg.seed, self.name, x.device, one)
        return Attribution(self.inner.finish(values, x).detach())
