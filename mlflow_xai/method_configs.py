"""The parameters of the Captum-backed attribution methods, one strict model per method.

A method runs when its key is present under ``methods:`` in the audit config; its value is validated
by the model here. Every argument the Captum algorithm takes is a key, under Captum's own name where
one exists. Methods that draw random numbers take a ``seed``: the same seed gives the same result.
Baselines live in the model's input space (after preprocessing): see ``BaselineConfig``.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

if "mlflow_xai.config" not in sys.modules:
    # mlflow_xai.config imports this module midway, for MethodsConfig. Imported first, this module
    # steps aside and lets config load it; the import then returns config's complete copy.
    del sys.modules[__name__]
    import mlflow_xai.config  # noqa: F401

from pydantic import Field, ValidationError, model_serializer, model_validator

from mlflow_xai.config import BaselineConfig, NonNegativeFloat, PositiveInt, _Strict, keys_of_kind

PositiveFloat = Annotated[float, Field(gt=0.0)]
LayerName = Annotated[str, Field(min_length=1, description="dotted module name, e.g. features.conv3")]
InterpolateMode = Literal["nearest", "linear", "bilinear", "bicubic", "trilinear", "area"]

_SEED = "seed of torch's random generator, set right before each call (same seed, same result)"
_PER_EVAL = "perturbed copies evaluated in one forward pass"


class SaliencyConfig(_Strict):
    abs: bool = Field(default=True, description="return |gradient| (Captum's default) or the signed one")


class InputXGradientConfig(_Strict):
    """Input times gradient; it takes no parameters."""


class GradientShapConfig(_Strict):
    """Expected gradients: gradient at a random point between a noisy input and a random baseline.

    Completeness (sum of attributions = F(x) - E[F(x')]) holds only in expectation over the random
    draws, so its error shrinks like 1/sqrt(n_samples) and is never exactly zero.
    """

    n_samples: PositiveInt = Field(default=16, description="random points per input")
    stdevs: NonNegativeFloat = Field(default=0.0, description="std of the Gaussian noise added to inputs")
    multiply_by_inputs: bool = Field(
        default=True, description="global attribution (x - x') * grad; false gives local gradients"
    )
    baseline: BaselineConfig = BaselineConfig()
    n_baselines: PositiveInt = Field(
        default=8, description="baselines drawn for the distribution (random baseline kinds only)"
    )
    seed: int = Field(default=0, description=_SEED)


class DeepLiftConfig(_Strict):
    """DeepLift's rescale rule; summation to delta is exact on ReLU networks without max-pooling."""

    multiply_by_inputs: bool = Field(
        default=True, description="global attribution (x - x') * multipliers; false gives multipliers"
    )
    eps: PositiveFloat = Field(default=1e-10, description="below this |x - x'| a non-linearity is linear")
    baseline: BaselineConfig = BaselineConfig()


class DeepLiftShapConfig(_Strict):
    """DeepLift averaged over a baseline distribution; F(x') is then the mean over the baselines."""

    multiply_by_inputs: bool = Field(
        default=True, description="global attribution (x - x') * multipliers; false gives multipliers"
    )
    baseline: BaselineConfig = BaselineConfig(kind="uniform")
    n_baselines: PositiveInt = Field(
        default=8, description="baselines in the distribution (random baseline kinds only)"
    )


class GuidedBackpropConfig(_Strict):
    """Guided backpropagation; it takes no parameters (it needs nn.ReLU modules)."""


class DeconvolutionConfig(_Strict):
    """Deconvolution; it takes no parameters (it needs nn.ReLU modules)."""


class _NeedsLayer(_Strict):
    @model_validator(mode="before")
    @classmethod
    def _layer_given(cls, data: Any) -> Any:
        if isinstance(data, dict) and "layer" not in data:
            raise ValueError("layer is required: the dotted name of a module, e.g. features.conv3")
        return data


class GuidedGradCamConfig(_NeedsLayer):
    layer: LayerName
    interpolate_mode: InterpolateMode = Field(
        default="nearest", description="how the layer's map is resized to the input (Captum's default)"
    )
    attribute_to_layer_input: bool = Field(
        default=False, description="GradCAM on the layer's input instead of its output"
    )


class LayerGradCamConfig(_NeedsLayer):
    """GradCAM on one layer, resized to the input's spatial size and repeated over its channels."""

    layer: LayerName
    relu_attributions: bool = Field(
        default=True, description="keep only positive evidence, as in the GradCAM paper"
    )
    attribute_to_layer_input: bool = Field(
        default=False, description="GradCAM on the layer's input instead of its output"
    )
    interpolate_mode: InterpolateMode = Field(
        default="bilinear", description="how the layer's map is resized to the input"
    )


_FEATURE_MASK_KEYS = {"grid": {"patch_size"}, "superpixel": {"n_segments", "compactness", "iterations"}}


class FeatureMaskConfig(_Strict):
    """Groups of input features perturbed together: square patches or superpixels.

    ``grid`` cuts the spatial axes into ``patch_size`` squares. ``superpixel`` runs k-means on colour
    and position (``n_segments`` centres on a grid; ``compactness`` weighs position against colour).
    Every channel of a pixel belongs to the same group.
    """

    kind: Literal["grid", "superpixel"] = "grid"
    patch_size: PositiveInt = Field(default=4, description="grid: side of a square patch in pixels")
    n_segments: PositiveInt = Field(default=16, description="superpixel: number of k-means centres")
    compactness: NonNegativeFloat = Field(
        default=1.0, description="superpixel: weight of position relative to colour"
    )
    iterations: PositiveInt = Field(default=10, description="superpixel: k-means iterations")

    @model_serializer(mode="wrap")
    def _only_keys_of_kind(self, handler: Any) -> Any:
        return keys_of_kind(handler(self), _FEATURE_MASK_KEYS[self.kind])

    @model_validator(mode="after")
    def _keys_of_kind(self) -> FeatureMaskConfig:
        own = _FEATURE_MASK_KEYS[self.kind]
        foreign = sorted(self.model_fields_set - own - {"kind"})
        if foreign:
            raise ValueError(
                f"{', '.join(foreign)} not used by feature mask kind {self.kind!r}, "
                f"which takes {', '.join(sorted(own))}"
            )
        return self


class FeatureAblationConfig(_Strict):
    feature_mask: FeatureMaskConfig = FeatureMaskConfig()
    baseline: BaselineConfig = BaselineConfig()
    perturbations_per_eval: PositiveInt = Field(default=64, description=_PER_EVAL)


class ShapleyValueSamplingConfig(_Strict):
    feature_mask: FeatureMaskConfig = FeatureMaskConfig()
    baseline: BaselineConfig = BaselineConfig()
    n_samples: PositiveInt = Field(default=25, description="random feature permutations per input")
    perturbations_per_eval: PositiveInt = Field(default=64, description=_PER_EVAL)
    seed: int = Field(default=0, description=_SEED)


class KernelShapConfig(_Strict):
    feature_mask: FeatureMaskConfig = FeatureMaskConfig()
    baseline: BaselineConfig = BaselineConfig()
    n_samples: PositiveInt = Field(default=64, description="coalitions sampled per input")
    perturbations_per_eval: PositiveInt = Field(default=64, description=_PER_EVAL)
    seed: int = Field(default=0, description=_SEED)


class LimeConfig(_Strict):
    feature_mask: FeatureMaskConfig = FeatureMaskConfig()
    baseline: BaselineConfig = BaselineConfig()
    n_samples: PositiveInt = Field(default=64, description="perturbed samples per input")
    perturbations_per_eval: PositiveInt = Field(default=64, description=_PER_EVAL)
    interpretable_model: Literal["lasso", "ridge", "linear_regression"] = Field(
        default="lasso", description="the surrogate fitted to the perturbations (scikit-learn)"
    )
    alpha: NonNegativeFloat = Field(default=0.01, description="regularisation of a lasso or ridge surrogate")
    distance_mode: Literal["cosine", "euclidean"] = Field(
        default="cosine", description="distance in the similarity kernel exp(-d^2 / width^2)"
    )
    kernel_width: PositiveFloat = Field(default=1.0, description="width of the similarity kernel")
    seed: int = Field(default=0, description=_SEED)

    @model_validator(mode="after")
    def _alpha_needs_regulariser(self) -> LimeConfig:
        if self.interpretable_model == "linear_regression" and "alpha" in self.model_fields_set:
            raise ValueError("alpha does not apply to interpretable_model 'linear_regression'")
        return self


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


# Every Captum-backed method's config model, by method name (MethodsConfig has one field each).
METHOD_CONFIGS: dict[str, type[_Strict]] = {
    "saliency": SaliencyConfig,
    "input_x_gradient": InputXGradientConfig,
    "gradient_shap": GradientShapConfig,
    "deeplift": DeepLiftConfig,
    "deeplift_shap": DeepLiftShapConfig,
    "guided_backprop": GuidedBackpropConfig,
    "deconvolution": DeconvolutionConfig,
    "guided_gradcam": GuidedGradCamConfig,
    "layer_gradcam": LayerGradCamConfig,
    "feature_ablation": FeatureAblationConfig,
    "shapley_value_sampling": ShapleyValueSamplingConfig,
    "kernel_shap": KernelShapConfig,
    "lime": LimeConfig,
    "noise_tunnel": NoiseTunnelConfig,
}
