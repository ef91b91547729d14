"""NoiseTunnel: SmoothGrad, SmoothGrad-squared or VarGrad over any Captum gradient method."""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import NoiseTunnel as CaptumNoiseTunnel

from mlflow_xai.methods._captum import CaptumGradientMethod, quiet_captum, seeded
from mlflow_xai.methods.base import Attribution, AttributionMethod, build, register
from mlflow_xai.model import ModelHandle


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

    @property
    def probe_mean(self) -> torch.Tensor | None:
        return self.inner.probe_mean

    @probe_mean.setter
    def probe_mean(self, value: torch.Tensor | None) -> None:
        self.inner.probe_mean = value

    def _attribute(self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor) -> Attribution:
        cfg = self.config
        self.inner.prepare(handle)
        explainer, kwargs = self.inner.algorithm(handle, x)
        with seeded(cfg.seed, x.device), quiet_captum():
            values = CaptumNoiseTunnel(explainer).attribute(
                x,
                nt_type=cfg.nt_type,
                nt_samples=cfg.nt_samples,
                nt_samples_batch_size=cfg.nt_samples_batch_size,
                stdevs=cfg.stdevs,
                draw_baseline_from_distrib=cfg.draw_baseline_from_distrib,
                target=target,
                **kwargs,
            )
        return Attribution(self.inner.finish(values, x).detach())
