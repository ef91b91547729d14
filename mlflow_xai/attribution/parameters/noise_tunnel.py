"""Parameters of NoiseTunnel (SmoothGrad and friends), which wraps a gradient method.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    model_validator,
)

from mlflow_xai.attribution.parameters.common import _SEED
from mlflow_xai.attribution.parameters.deeplift import DeepLiftConfig
from mlflow_xai.attribution.parameters.gradients import InputXGradientConfig, SaliencyConfig
from mlflow_xai.attribution.parameters.guided import (
    DeconvolutionConfig,
    GuidedBackpropConfig,
    GuidedGradCamConfig,
)
from mlflow_xai.strict import NonNegativeFloat, PositiveInt, _Strict

# Methods NoiseTunnel can wrap: Captum gradient attributions whose output has the input's shape.
NOISE_TUNNEL_METHODS: dict[str, type[_Strict]] = {
    "saliency": SaliencyConfig,
    "input_x_gradient": InputXGradientConfig,
    "deeplift": DeepLiftConfig,
    "guided_backprop": GuidedBackpropConfig,
    "deconvolution": DeconvolutionConfig,
    "guided_gradcam": GuidedGradCamConfig,
}


class NoiseTunnelConfig(_Strict):
    """SmoothGrad and friends: the wrapped method's attributions averaged over noisy copies.

    ``method`` names the wrapped gradient method and ``params`` holds its parameters, validated as
    they would be under its own key.
    """

    method: Literal[tuple(NOISE_TUNNEL_METHODS)]  # type: ignore[valid-type]
    params: dict[str, Any] = Field(default_factory=dict, description="the wrapped method's parameters")
    nt_type: Literal["smoothgrad", "smoothgrad_sq", "vargrad"] = "smoothgrad"
    nt_samples: PositiveInt = Field(default=8, description="noisy copies per input")
    nt_samples_batch_size: PositiveInt | None = Field(
        default=None, description="noisy copies per forward pass (default: all at once)"
    )
    stdevs: NonNegativeFloat = Field(default=0.1, description="std of the Gaussian noise, input units")
    draw_baseline_from_distrib: bool = Field(
        default=False, description="draw one baseline per noisy copy (deeplift with a distribution)"
    )
    seed: int = Field(default=0, description=_SEED)

    @model_validator(mode="after")
    def _params_fit_method(self) -> NoiseTunnelConfig:
        self.wrapped_config()
        return self

    def wrapped_config(self) -> _Strict:
        """The wrapped method's parameters as its own config model."""
        model = NOISE_TUNNEL_METHODS[self.method]
        try:
            return model.model_validate(self.params)
        except ValidationError as exc:
            problems = "; ".join(_one_line(err) for err in exc.errors(include_url=False))
            raise ValueError(f"params of {self.method!r}: {problems}") from None


def _one_line(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key {loc!r}"
    if err["type"] == "missing":
        return f"{loc} is required"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message
