"""The parameter models of every attribution method, and the registry of them by method name.

Pure pydantic: the config schema imports this module (and only this one) from ``attribution/``,
so that a config loads without torch or Captum. A method runs when its key is present under
``methods:``; its value is validated by the model here. Every argument the Captum algorithm takes
is a key, under Captum's own name where one exists. Methods that draw random numbers take a
``seed``: the same seed gives the same result. Baselines live in the model's input space (after
preprocessing): see ``BaselineConfig``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationError,
    model_serializer,
    model_validator,
)

from mlflow_xai.attribution.quadrature import RULES
from mlflow_xai.strict import NonNegativeFloat, PositiveInt, _Strict, keys_of_kind


class BaselineConfig(_Strict):
    """The reference input x'. It lives in the model's input space (after any preprocessing).

    ``baseline: zeros`` is shorthand for ``baseline: {kind: zeros}``. Each kind takes only its own
    keys: ``constant`` a ``value``, ``blur`` a ``sigma``, ``uniform`` ``low``/``high``/``seed``,
    ``file`` a ``path`` to a ``.npy`` array of one input's shape; ``probe_mean`` (the mean input of
    the probe set) and ``zeros`` take none.
    """

    kind: Literal["zeros", "constant", "blur", "uniform", "probe_mean", "file"] = "zeros"
    value: float = Field(default=0.0, description="the fill value of a constant baseline")
    sigma: Annotated[float, Field(gt=0.0)] = Field(
        default=2.0, description="standard deviation in pixels of a blur baseline's Gaussian"
    )
    low: float = Field(default=0.0, description="lower bound of a uniform-noise baseline")
    high: float = Field(default=1.0, description="upper bound of a uniform-noise baseline")
    seed: int = Field(default=0, description="seed of a uniform-noise baseline")
    path: str | None = Field(default=None, description="a .npy file holding one input (file kind)")

    @model_validator(mode="before")
    @classmethod
    def _from_shorthand(cls, data: Any) -> Any:
        # `baseline: zeros` is shorthand for `baseline: {kind: zeros}`.
        if isinstance(data, str):
            return {"kind": data}
        return data

    @model_serializer(mode="wrap")
    def _only_keys_of_kind(self, handler: Any) -> Any:
        return keys_of_kind(handler(self), _BASELINE_KEYS[self.kind])

    @model_validator(mode="after")
    def _keys_of_kind(self) -> BaselineConfig:
        own = _BASELINE_KEYS[self.kind]
        foreign = sorted(self.model_fields_set - own - {"kind"})
        if foreign:
            allowed = ", ".join(sorted(own)) or "no other key"
            verb = "does" if len(foreign) == 1 else "do"
            raise ValueError(
                f"{', '.join(foreign)} {verb} not apply to baseline kind {self.kind!r}, which takes {allowed}"
            )
        if self.kind == "uniform" and not self.low < self.high:
            raise ValueError(f"low must be < high for a uniform baseline, got {self.low} and {self.high}")
        if self.kind == "file" and (self.path is None or not self.path.endswith(".npy")):
            raise ValueError(f"baseline kind 'file' needs a path to a .npy file, got {self.path!r}")
        return self


_BASELINE_KEYS: dict[str, set[str]] = {
    "zeros": set(),
    "constant": {"value"},
    "blur": {"sigma"},
    "uniform": {"low", "high", "seed"},
    "probe_mean": set(),
    "file": {"path"},
}


#: ``internal_batch_size: auto`` of IG: at most this many points a pass, and at most
#: IG_VALUES_PER_PASS input values (2^22, 16 MiB of float32 inputs) in them.
IG_POINTS_PER_PASS = 512
IG_VALUES_PER_PASS = 1 << 22


class IntegratedGradientsConfig(_Strict):
    """``n_steps: auto`` refines each sample's trapezoid partition of the path, where it is needed,
    until its completeness error and its step change (each interval against its halves) are both
    within tolerance; the tolerances and step bounds below apply only then. A fixed ``n_steps``
    uses ``rule``."""

    n_steps: PositiveInt | Literal["auto"] = Field(
        default=32, description="gradient evaluations along the path, or 'auto' (per sample)"
    )
    rule: Literal[RULES] = "gauss_legendre"  # type: ignore[valid-type]
    baseline: BaselineConfig = BaselineConfig()
    internal_batch_size: PositiveInt | Literal["auto"] = Field(
        default="auto",
        description="interpolated inputs per forward/backward pass; auto = 512, fewer for inputs of "
        "more than 8,192 values (2^22 input values a pass: 27 images at 3x224x224)",
    )
    completeness_tolerance: NonNegativeFloat = Field(
        default=0.01, description="auto: max |sum(attr) - (F(x) - F(x'))| / |F(x) - F(x')|"
    )
    step_change_tolerance: NonNegativeFloat = Field(
        default=0.02, description="auto: max ||a_fine - a_coarse|| / ||a_fine|| (intervals vs their halves)"
    )
    min_steps: PositiveInt = Field(
        default=33, description="auto: the first check uses at least this many evaluations"
    )
    max_steps: PositiveInt = Field(default=513, description="auto: at most this many evaluations per sample")
    check_step_change: bool = Field(
        default=False,
        description="fixed n_steps: also integrate with 2 n_steps and report the step change (3x cost)",
    )

    def points_per_pass(self, sample_values: int) -> int:
        """``internal_batch_size`` for inputs of ``sample_values`` values each, ``auto`` resolved.

        A pass holds every point's activations for the backward pass, and they grow with the
        input: on resnet18 at 3x224x224, 128 points a pass (4 images x 32 steps) peaked at 3.9 GB
        RSS, 27 points at 1.6 GB, in the same time on a CPU (benchmarks/real_models.py)."""
        if self.internal_batch_size != "auto":
            return self.internal_batch_size
        return max(1, min(IG_POINTS_PER_PASS, IG_VALUES_PER_PASS // max(1, sample_values)))

    @model_validator(mode="before")
    @classmethod
    def _auto_means_trapezoid(cls, data: Any) -> Any:
        # The adaptive partitions are integrated by trapezoid: say so in the validated config.
        if isinstance(data, Mapping) and data.get("n_steps") == "auto" and "rule" not in data:
            return {**data, "rule": "trapezoid"}
        return data

    @model_validator(mode="after")
    def _steps_fit_the_rule(self) -> IntegratedGradientsConfig:
        if self.n_steps == "auto":
            if self.rule != "trapezoid":
                raise ValueError(
                    f"rule {self.rule!r} does not apply with n_steps 'auto', which always uses "
                    "trapezoid partitions; drop rule or set a fixed n_steps"
                )
            from mlflow_xai.attribution.quadrature import nested_trapezoid_intervals

            nested_trapezoid_intervals(self.min_steps, self.max_steps)  # raises if they do not fit
        elif self.rule == "trapezoid" and self.n_steps < 2:
            raise ValueError("n_steps must be >= 2 with rule 'trapezoid' (it evaluates both ends)")
        return self


class OcclusionConfig(_Strict):
    """Slide a window over the input, set it to ``baseline`` and record how the output drops.

    ``sliding_window_shapes: auto`` (the default) fits any input: all channels, and a quarter of
    each spatial side (rounded up), so an image of any size gets 7 x 7 windows; a 1-D (tabular) row
    is occluded one feature at a time. ``strides: auto`` is half the window on each axis (rounded
    up), the whole axis where the window spans it (the channels), and one feature for a 1-D row.
    ``mlflow-xai validate-config --input-shape C,H,W`` shows what they resolve to.
    """

    sliding_window_shapes: list[PositiveInt] | Literal["auto"] = Field(
        default="auto", description="window per input axis (channels first), or 'auto' (from the input)"
    )
    strides: list[PositiveInt] | Literal["auto"] = Field(
        default="auto", description="window step per input axis, or 'auto' (half the window)"
    )
    baseline: float = 0.0
    perturbations_per_eval: PositiveInt | None = Field(
        default=None,
        description="windows occluded per forward pass; null = as many as internal_batch_size allows",
    )
    internal_batch_size: PositiveInt = Field(
        default=128, description="occluded images per forward pass (when perturbations_per_eval is null)"
    )

    @model_validator(mode="after")
    def _same_rank(self) -> OcclusionConfig:
        window, strides = self.sliding_window_shapes, self.strides
        if window == "auto" or strides == "auto":
            return self  # checked against the input's shape when it is known
        check_occlusion_windows(window, strides)
        return self

    def resolve(self, sample_shape: tuple[int, ...]) -> tuple[list[int], list[int]]:
        """The window and strides for inputs of ``sample_shape`` (one input, channels first)."""
        window = self.sliding_window_shapes
        if window == "auto":
            if len(sample_shape) == 1:
                window = [1]
            else:
                window = [sample_shape[0], *(math.ceil(side / 4) for side in sample_shape[1:])]
        strides = self.strides
        if strides == "auto":  # half the window; a window as long as its axis has one position
            sides = sample_shape if len(sample_shape) == len(window) else (0,) * len(window)
            strides = [w if w >= side else math.ceil(w / 2) for w, side in zip(window, sides, strict=True)]
        return list(window), list(strides)


def check_occlusion_windows(window: list[int], strides: list[int]) -> None:
    """Refuse windows and strides of different lengths, and strides longer than their window."""
    if len(strides) != len(window):
        raise ValueError(
            f"strides {strides} and sliding_window_shapes {window} "
            "must have the same length (one entry per input dimension)"
        )
    pairs = zip(strides, window, strict=True)
    wider = [axis for axis, (stride, size) in enumerate(pairs) if stride > size]
    if wider:
        raise ValueError(
            f"strides {strides} exceed sliding_window_shapes {window} on "
            f"axis {', '.join(map(str, wider))}: features between two windows would be covered by "
            "none and get no attribution; each stride must be <= its window entry"
        )

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
