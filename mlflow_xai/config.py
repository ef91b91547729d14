"""The audit configuration: one YAML schema, validated once where it enters.

Every later stage trusts an ``AuditConfig``. Validation is strict: ``n_steps: "50"`` is an error, not
a coerced 50, and every error names the key path, the value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from mlflow_xai.errors import ConfigError

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]

INTEGRATION_RULES = ("left", "right", "midpoint", "trapezoid", "gauss_legendre")
OUTPUTS = ("logit", "probability", "log_probability")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def keys_of_kind(data: Any, own: set[str]) -> Any:
    """A dumped kind-keyed section keeps only ``kind`` and the keys that kind takes, so that the
    dumped config loads again (a key of another kind is an error on load)."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if k == "kind" or k in own}
    return data


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
    rule: Literal[INTEGRATION_RULES] = "gauss_legendre"  # type: ignore[valid-type]
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
            from mlflow_xai.quadrature import nested_trapezoid_intervals

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


# The Captum-backed methods' parameter models live in their own module, which builds on the classes
# above (import order: this module first; it loads method_configs here, before MethodsConfig needs it).
from mlflow_xai.method_configs import (  # noqa: E402
    DeconvolutionConfig,
    DeepLiftConfig,
    DeepLiftShapConfig,
    FeatureAblationConfig,
    GradientShapConfig,
    GuidedBackpropConfig,
    GuidedGradCamConfig,
    InputXGradientConfig,
    KernelShapConfig,
    LayerGradCamConfig,
    LimeConfig,
    NoiseTunnelConfig,
    SaliencyConfig,
    ShapleyValueSamplingConfig,
)


class MethodsConfig(_Strict):
    """A method runs when its key is present; its value holds the method's parameters."""

    integrated_gradients: IntegratedGradientsConfig | None = None
    occlusion: OcclusionConfig | None = None
    saliency: SaliencyConfig | None = None
    input_x_gradient: InputXGradientConfig | None = None
    gradient_shap: GradientShapConfig | None = None
    deeplift: DeepLiftConfig | None = None
    deeplift_shap: DeepLiftShapConfig | None = None
    guided_backprop: GuidedBackpropConfig | None = None
    deconvolution: DeconvolutionConfig | None = None
    guided_gradcam: GuidedGradCamConfig | None = None
    layer_gradcam: LayerGradCamConfig | None = None
    feature_ablation: FeatureAblationConfig | None = None
    shapley_value_sampling: ShapleyValueSamplingConfig | None = None
    kernel_shap: KernelShapConfig | None = None
    lime: LimeConfig | None = None
    noise_tunnel: NoiseTunnelConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_means_defaults(cls, data: Any) -> Any:
        # `occlusion:` with no value (YAML null) or `{}` both mean "run with the defaults".
        if isinstance(data, Mapping):
            return {k: ({} if v is None else v) for k, v in data.items()}
        return data

    def enabled(self) -> dict[str, _Strict]:
        return {name: cfg for name, cfg in self if cfg is not None}


class CompletenessConfig(_Strict):
    tolerance: NonNegativeFloat = Field(default=0.01, description="max relative completeness error")
    degenerate_floor: NonNegativeFloat = Field(
        default=1e-6, description="|F(x) - F(x')| below this marks a degenerate baseline"
    )


class ChecksConfig(_Strict):
    completeness: CompletenessConfig = CompletenessConfig()


def check_display_channels(mean: list[float], channels: int, source: str) -> None:
    """Refuse a display mean/std (from ``source``) that has neither one value per channel nor one for
    all; the engine calls it before any compute, the artifact writer for a report built elsewhere."""
    if len(mean) not in (1, channels):
        raise ConfigError(
            f"{source} has {len(mean)} values per channel (mean and std) but the probe's images have "
            f"{channels} channels; give one value per channel, or one for all"
        )


class ArtifactsConfig(_Strict):
    """What the review artifacts draw. The sheets follow Captum's ``visualize_image_attr_multiple``:
    ``sheet_columns`` are its visualisation methods, ``sign`` its sign modes and ``outlier_perc`` its
    normalisation (the largest attributions holding that percentage of an image's total |attribution|
    saturate; ``color_scale`` replaces that per-image scale with one fixed bound). ``masked_image``
    and ``alpha_scaling`` scale the input by the normalised map, so they need a one-signed ``sign``.

    ``display`` says how an image input is drawn, with one map from model inputs to colours for
    every row of every sheet (a min-max stretch of each image on its own would show one colour in a
    different shade in each row):

    - ``auto`` (the default): where ``probe.preprocess`` has ``mean``/``std``, the probe's
      normalisation undone, ``x * std + mean`` per channel, clipped to [0, 1]. Without them, inputs
      that lie in [0, 1] over the whole probe set are shown as they are; any others are stretched
      with one min-max over the whole probe set, a fallback that the sheet's title names and a
      warning reports: the colours are then not the image's own, and ``display`` should say how the
      probe was normalised.
    - ``{mean: [...], std: [...]}``: undo a normalisation made outside the package (a ProbeSet
      passed already normalised), one value per channel or one for all channels. It takes
      precedence over ``probe.preprocess``.
    - ``none``: the inputs as they are, clipped to [0, 1].
    - ``minmax``: one min-max stretch over the whole probe set.

    Tabular probes draw no image: ``display`` and the sheet settings do not apply to them.
    """

    sheet_samples: Annotated[int, Field(ge=0)] = Field(
        default=8, description="samples drawn in each method's PNG sheet"
    )
    mask_dtype: Literal["float16", "float32"] = "float16"
    sign: Literal["all", "positive", "negative", "absolute_value"] = Field(
        default="all", description="attributions shown in the heat maps, as in Captum's visualiser"
    )
    color_scale: Annotated[float, Field(gt=0.0)] | None = Field(
        default=None, description="fixed heat-map bound shared by all methods and runs; null = per image"
    )
    feature_bars: Annotated[int, Field(ge=1)] = Field(
        default=20, description="tabular probes: features shown in the attribution bar chart"
    )
    sheet_columns: Annotated[
        list[Literal["original_image", "heat_map", "blended_heat_map", "masked_image", "alpha_scaling"]],
        Field(min_length=1),
    ] = Field(
        default=["original_image", "heat_map", "blended_heat_map"],
        description="the panels of each sheet row, Captum's visualisation methods, in order",
    )
    outlier_perc: Annotated[float, Field(ge=0.0)] = Field(
        default=2.0,
        description="per-image colour scale: the largest attributions holding this percentage of the "
        "total |attribution| saturate (Captum's default 2; 0 = scale to the largest value)",
    )
    display: Literal["auto", "none", "minmax"] | dict[str, list[float]] = Field(
        default="auto",
        description="how image inputs are drawn: auto, none, minmax, or {mean: [...], std: [...]} to undo",
    )

    @field_validator("outlier_perc")
    @classmethod
    def _below_100(cls, value: float) -> float:
        if value >= 100.0:
            raise ValueError(
                f"must be < 100, got {value:g}: at 100 every attribution would count as an outlier and "
                "the scale would be the smallest value"
            )
        return value

    @field_validator("display", mode="before")
    @classmethod
    def _display(cls, value: Any) -> Any:
        # One message per mistake, naming what is allowed, instead of one per branch of the union.
        allowed = "'auto', 'none', 'minmax' or a mapping {mean: [...], std: [...]}"
        if isinstance(value, str):
            if value not in ("auto", "none", "minmax"):
                raise ValueError(f"must be {allowed}, got {_brief(value)}")
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"must be {allowed}, got {_brief(value)}")
        keys = set(value)
        if keys != {"mean", "std"}:
            other = ", ".join(sorted(map(str, keys - {"mean", "std"}))) or "none"
            missing = ", ".join(sorted({"mean", "std"} - keys)) or "none"
            raise ValueError(
                f"a display mapping takes mean and std, one value per channel (or one for all), to undo "
                f"x = (raw - mean) / std; missing: {missing}; not allowed: {other}"
            )
        numbers = {}
        for name in ("mean", "std"):
            values = value[name]
            listed = isinstance(values, (list, tuple)) and len(values) > 0
            finite = listed and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
            )
            if not finite:  # YAML's true/false are no numbers here
                raise ValueError(
                    f"display {name} must be a non-empty list of finite numbers, got {_brief(values)}"
                )
            numbers[name] = [float(v) for v in values]
        if any(v <= 0 for v in numbers["std"]):
            raise ValueError(f"display std values must be > 0, got {numbers['std']}")
        if len(numbers["mean"]) != len(numbers["std"]):
            raise ValueError(
                f"display mean has {len(numbers['mean'])} values and std {len(numbers['std'])}; give one "
                "of each per channel"
            )
        return numbers

    @model_validator(mode="after")
    def _one_signed_columns(self) -> ArtifactsConfig:
        scaled = [c for c in self.sheet_columns if c in ("masked_image", "alpha_scaling")]
        if scaled and self.sign == "all":
            raise ValueError(
                f"sheet_columns {', '.join(dict.fromkeys(scaled))} cannot show sign 'all': they scale "
                "the image by the normalised map, which must be one-signed (as in Captum); set sign to "
                "positive, negative or absolute_value, or drop them"
            )
        return self


class ThresholdConfig(_Strict):
    """Warn and fail levels of one metric, absolute or relative to the baseline model's value.

    With ``relative: true`` a level is the allowed relative change against the baseline model, in
    the bad direction: 0.1 fails (or warns) when the metric is 10% worse than the baseline's.
    """

    warn: float | None = None
    fail: float | None = None
    higher_is_better: bool = Field(default=False, description="direction of the metric")
    relative: bool = Field(default=False, description="levels relative to the baseline model")

    @model_validator(mode="after")
    def _some_level(self) -> ThresholdConfig:
        if self.warn is None and self.fail is None:
            raise ValueError("a threshold needs a warn level, a fail level or both")
        if self.relative and any(v is not None and v < 0 for v in (self.warn, self.fail)):
            raise ValueError("relative levels are allowed changes and must be >= 0")
        if self.warn is not None and self.fail is not None:
            ordered = self.warn <= self.fail if not self.higher_is_better else self.warn >= self.fail
            if self.relative:
                ordered = self.warn <= self.fail
            if not ordered:
                raise ValueError(
                    f"the warn level {self.warn} must be reached before the fail level {self.fail}"
                )
        return self


class GateConfig(_Strict):
    """What ``mlflow-xai audit`` and ``mlflow-xai gate`` judge, and which levels fail the job."""

    fail_on: list[Literal["fail", "warn"]] = Field(default=["fail"], min_length=1)
    thresholds: dict[str, ThresholdConfig] = Field(
        default_factory=dict, description="metric name (xai/<method>/<quantity>) to its levels"
    )
    method_checks: bool = Field(
        default=True, description="each method's own checks (completeness) are gate checks too"
    )

    @model_validator(mode="after")
    def _metric_names(self) -> GateConfig:
        for name in self.thresholds:
            if not name.startswith("xai/") or name.count("/") not in (2, 3):
                raise ValueError(
                    f"threshold key {name!r} must be a metric name of the form xai/<method>/<quantity> "
                    "(or xai/<method>/<target>/<quantity> for one of several targets), e.g. "
                    "xai/integrated_gradients/completeness_rel_error_p95"
                )
        return self


class PreprocessConfig(_Strict):
    """How raw probe data becomes model input, in this order (as torchvision's transforms in
    Captum's tutorial): ``resize``, ``center_crop``, divide by ``scale``, then normalize with
    ``mean``/``std`` per channel. Integer (e.g. uint8) data needs a ``scale``: it is never guessed.

    ``resize: 256`` scales the shorter side to 256 pixels (aspect kept); ``resize: [h, w]`` and
    ``center_crop: [h, w]`` give both sides; ``center_crop: 224`` means 224 x 224.
    """

    scale: Annotated[float, Field(gt=0.0)] | None = Field(
        default=None, description="divide raw values by this, e.g. 255 for uint8 images"
    )
    resize: PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None
    center_crop: PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None
    mean: list[float] | None = Field(default=None, min_length=1, description="per-channel mean")
    std: list[Annotated[float, Field(gt=0.0)]] | None = Field(
        default=None, min_length=1, description="per-channel standard deviation"
    )

    @model_validator(mode="after")
    def _mean_with_std(self) -> PreprocessConfig:
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std go together: give both (one value per channel) or neither")
        if self.mean is not None and len(self.mean) != len(self.std):
            raise ValueError(
                f"mean has {len(self.mean)} values and std {len(self.std)}; give one of each per channel"
            )
        return self


# The two layouts of probe.class_index, as its refusals name them.
CLASS_INDEX_LAYOUTS = (
    'a mapping of folder name to class index ({"cat": 281}), or of class index to [folder name, '
    'description] as in ImageNet\'s imagenet_class_index.json ({"281": ["n02123045", "tabby"]})'
)


class ProbeConfig(_Strict):
    """How the probe set is read: its preprocessing, how ``max_samples`` picks samples, and which
    class of the model each class folder of an image folder holds.

    Without ``class_index`` an image folder is labelled as ``torchvision.datasets.ImageFolder``
    labels it: by the folder's position in sorted order (cat=0, dog=1). That is the model's class
    only for a model trained on that very layout; an ImageNet model knows a tabby cat as 281, so
    ``target: label`` would explain the wrong classes and the accuracy would score against them.
    ``class_index`` names each folder's class of the model, inline (``class_index: {cat: 281,
    dog: 207}``) or as the path of a JSON file (relative to the working directory) in one of two
    layouts:

    - folder name to class index: ``{"cat": 281, "dog": 207}``;
    - class index to ``[folder name, description]``, the layout of Keras' ``imagenet_class_index.json``
      that many PyTorch ImageNet examples use (``{"281": ["n02123045", "tabby"], ...}``):
      the folder names are then the WordNet ids (``n02123045``), as ImageNet's own class folders
      are named; the description (``tabby``) is not matched against folder names.

    The file is read when the config is validated and the config keeps the mapping, not the path:
    the logged config then records which classes the labels meant even if the file changes later.
    Indices are integers >= 0 and no two folders may share one. A class index may name more
    folders than the probe has (all 1000 ImageNet classes), but it must name every class folder of
    the probe, and it applies to image folders only: other sources carry their own labels.
    """

    sampling: Literal["first", "random", "stratified"] = Field(
        default="first",
        description="max_samples takes the first samples, a seeded random draw, or a seeded draw "
        "per label in proportion to its share",
    )
    preprocess: PreprocessConfig | None = None
    class_index: dict[str, Annotated[int, Field(ge=0)]] | None = Field(
        default=None,
        description="image folders: the model's class index of each class folder, a mapping or a JSON "
        "file; null = the folder's position in sorted order (as torchvision's ImageFolder)",
    )

    @field_validator("class_index", mode="before")
    @classmethod
    def _class_index(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (str, Path)):
            return read_class_index(value)
        if not isinstance(value, Mapping):
            raise ValueError(
                f"must be {CLASS_INDEX_LAYOUTS}, given inline or as the path of a JSON file, got "
                f"{_brief(value)}"
            )
        return class_index_of(value, "the mapping")


def read_class_index(path: str | Path) -> dict[str, int]:
    """``{folder name: class index}`` from a JSON file in either layout ``ProbeConfig`` describes."""
    import json  # only a class index file needs it

    where = f"class index file {str(path)!r}"
    file = Path(path)
    if not file.is_file():
        missing = "is a folder, not a file" if file.is_dir() else "does not exist"
        raise ValueError(
            f"{where} {missing}; give a JSON file holding {CLASS_INDEX_LAYOUTS}, or the mapping inline"
        )

    def no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # json keeps the last of two equal keys silently; a repeated folder or class is a mistake.
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise ValueError(f"{where} has the key {key!r} twice; each key must appear once")
            seen[key] = value
        return seen

    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where} is not UTF-8 text; a class index file is JSON") from None
    except OSError as exc:
        raise ValueError(f"{where} cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(text, object_pairs_hook=no_repeated_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{where} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    return class_index_of(data, where)


def class_index_of(data: Any, where: str) -> dict[str, int]:
    """``{folder name: class index}`` from either layout, each entry checked; ``where`` names the
    source in a refusal ("the mapping" inline, the file otherwise)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must hold {CLASS_INDEX_LAYOUTS}, got {_brief(data)}")
    if not data:
        raise ValueError(f"{where} is empty; it must name the class of each class folder of the probe")
    imagenet = [isinstance(value, (list, tuple)) for value in data.values()]
    if any(imagenet) and not all(imagenet):
        raise ValueError(
            f"{where} mixes the two layouts (some values are lists, some are not); it must be "
            f"{CLASS_INDEX_LAYOUTS}"
        )
    pairs = [_imagenet_entry(k, v, where) for k, v in data.items()] if all(imagenet) else list(data.items())
    index: dict[str, int] = {}
    owner: dict[int, str] = {}
    for name, cls in pairs:
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"{where} has the key {name!r}; a folder name is a non-empty string (quote a name "
                "that YAML would read as a number, e.g. '001': 3)"
            )
        if type(cls) is not int or cls < 0:  # bool is an int to Python, never a class
            raise ValueError(
                f"{where} maps folder {name!r} to {_brief(cls)}; a class index is an integer >= 0, "
                "the position of the class in the model's output"
            )
        if name in index:
            raise ValueError(
                f"{where} names folder {name!r} for both class {index[name]} and class {cls}; a folder "
                "holds one class"
            )
        if cls in owner:
            raise ValueError(
                f"{where} maps both {owner[cls]!r} and {name!r} to class {cls}; each class folder must "
                "be a different class of the model"
            )
        index[name], owner[cls] = cls, name
    return index


def _imagenet_entry(key: Any, value: Any, where: str) -> tuple[Any, int]:
    """(folder name, class index) of one ``"281": ["n02123045", "tabby"]`` entry."""
    number = key if type(key) is int else None
    if isinstance(key, str) and key.isascii() and key.isdecimal():
        number = int(key)
    if number is None:
        raise ValueError(
            f"{where} has the key {key!r} with a list value; in the layout of imagenet_class_index.json "
            'each key is a class index such as "281"'
        )
    if len(value) != 2 or not all(isinstance(part, str) for part in value):
        raise ValueError(
            f"{where} maps {key!r} to {_brief(value)}; in the layout of imagenet_class_index.json each "
            'value is [folder name, description], e.g. ["n02123045", "tabby"]'
        )
    return value[0], number


def _brief(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut short: a refusal quotes the value, not a whole file."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


class PrecisionConfig(_Strict):
    """Numerics of the audit. Inputs follow the model's parameter dtype (float32 unless the model is
    float64). ``autocast`` runs only the gradient passes (the points along an attribution path) in
    lower precision; every output that is reported or checked (predictions, F(x), F(x')) is
    computed in full precision. On the CPU only bfloat16 autocast is supported."""

    autocast: Literal["bfloat16", "float16"] | None = Field(
        default=None, description="precision of the gradient passes; null = full precision"
    )
    tf32: bool = Field(default=False, description="let CUDA matmuls and convolutions use TF32")


class DistributedConfig(_Strict):
    """Where the audit's batches are attributed: ``local`` (this process) or ``ray`` (a pool of actors
    on a Ray cluster, each loading the model once). Results do not depend on the engine: every batch
    is seeded by its position in the probe set, so a Ray audit matches a local one sample for sample
    when both use the same batch size."""

    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster to join, e.g. ray://head:10001 or auto; null = $RAY_ADDRESS, "
        "else start a local cluster for this audit",
    )
    num_actors: PositiveInt = Field(default=2, description="attribution actors (model copies) in the pool")
    num_gpus: NonNegativeFloat = Field(
        default=0.0, description="GPUs per actor; 0 = CPU actors (fractions share a GPU)"
    )
    num_cpus: Annotated[float, Field(gt=0.0)] = Field(default=1.0, description="CPUs per actor")
    batch_size: PositiveInt | None = Field(
        default=None, description="probe samples per batch sent to an actor; null = the audit's batch_size"
    )
    max_restarts: Annotated[int, Field(ge=0)] = Field(
        default=3, description="times Ray restarts a failed actor before the audit fails"
    )
    max_task_retries: Annotated[int, Field(ge=0)] = Field(
        default=3, description="times a batch is retried on a restarted actor before the audit fails"
    )
    local_num_cpus: PositiveInt | None = Field(
        default=None, description="CPUs of a local cluster started for the audit; null = all"
    )


#: One target: the predicted class, the label, or a fixed class index of the model.
Target = Literal["predicted", "label"] | Annotated[int, Field(ge=0)]


class TopTargets(_Strict):
    """``target: {top: k}``: the k classes the model scores highest, per sample (top1 = predicted)."""

    top: PositiveInt


def target_entries(target: Target | list[Target] | TopTargets) -> list[Target]:
    """The listed targets (``predicted``, ``label``, class indices) as a list; none for ``top: k``."""
    if isinstance(target, TopTargets):
        return []
    return target if isinstance(target, list) else [target]


def target_slots(target: Target | list[Target] | TopTargets) -> list[str]:
    """The names of an audit's targets, as metrics and folders name them: ``predicted``, ``label``,
    ``class_208``, ``top1`` .. ``topk``. One target gives one slot; with several, every method's
    metrics and masks are kept per slot (``xai/<method>/<slot>/...``)."""
    if isinstance(target, TopTargets):
        return [f"top{rank}" for rank in range(1, target.top + 1)]
    return [entry if isinstance(entry, str) else f"class_{entry}" for entry in target_entries(target)]


def read_class_names(value: Any) -> dict[int, str]:
    """``{class index: name}`` from a list of names (position = index), a mapping, or the path of a
    file: JSON (a list, a mapping, or ImageNet's ``{"281": ["n02123045", "tabby"]}``, whose
    description is the name) or text with one name per line."""
    import json  # only class names need it

    where = "class_names"
    if isinstance(value, (str, Path)):
        where = f"class names file {str(value)!r}"
        file = Path(value)
        if not file.is_file():
            raise ValueError(
                f"{where} does not exist; give a JSON list or mapping of class names, a text file with "
                "one name per line, or the names inline"
            )
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{where} cannot be read as UTF-8 text: {exc}") from None
        if file.suffix.lower() == ".json":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
        else:
            value = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(value, list):
        pairs = list(enumerate(value))
    elif isinstance(value, Mapping):
        pairs = []
        for key, name in value.items():
            index = key if type(key) is int else None
            if isinstance(key, str) and key.isascii() and key.isdecimal():
                index = int(key)
            if index is None:
                raise ValueError(f"{where} has the key {key!r}; keys are class indices such as 281")
            if isinstance(name, list) and len(name) == 2:  # imagenet_class_index.json: [wnid, name]
                name = name[1]
            pairs.append((index, name))
    else:
        raise ValueError(
            f"{where} must be a list of names or a mapping of class index to name, got {_brief(value)}"
        )
    names: dict[int, str] = {}
    for index, name in pairs:
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"{where} gives class {index} the name {_brief(name)}; a name is a non-empty string"
            )
        names[index] = name
    if not names:
        raise ValueError(f"{where} is empty")
    return names


class AuditConfig(_Strict):
    device: str = Field(default="auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    seed: int = 0
    batch_size: PositiveInt = Field(default=32, description="probe samples per batch")
    target: Target | list[Target] | TopTargets = Field(
        default="predicted",
        description="the class each sample is explained for: predicted, label, a class index, a list "
        "of them (each audited, with its own masks and metrics), or {top: k}",
    )
    class_names: dict[int, str] | None = Field(
        default=None,
        description="names of the model's classes for titles and tables: a list, a mapping of index "
        "to name, or a file (JSON, or text with one name per line)",
    )
    output: Literal[OUTPUTS] = "logit"  # type: ignore[valid-type]
    output_key: str | None = Field(
        default=None, description="a model that returns a dict: the key of its class scores"
    )
    output_index: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="a model that returns a tuple: the index of its class scores"
    )
    input_shape: list[PositiveInt] | None = Field(
        default=None, description="shape of one input without the batch axis, e.g. [3, 32, 32]"
    )
    max_samples: PositiveInt | None = None
    probe: ProbeConfig = ProbeConfig()
    precision: PrecisionConfig = PrecisionConfig()
    methods: MethodsConfig = MethodsConfig(
        integrated_gradients=IntegratedGradientsConfig(), occlusion=OcclusionConfig()
    )
    checks: ChecksConfig = ChecksConfig()
    artifacts: ArtifactsConfig = ArtifactsConfig()
    gate: GateConfig = GateConfig()
    distributed: DistributedConfig | None = Field(
        default=None, description="engine and Ray settings; null = the local engine"
    )

    @model_validator(mode="before")
    @classmethod
    def _auto_follows_the_completeness_check(cls, data: Any) -> Any:
        # n_steps: auto refines each sample until its completeness error is within the method's
        # tolerance; unless one is given, that is the tolerance the completeness check judges by.
        ig = _mapping_at(data, "methods", "integrated_gradients")
        check = _mapping_at(data, "checks", "completeness")
        if ig is None or ig.get("n_steps") != "auto" or "completeness_tolerance" in ig:
            return data
        if check is None or "tolerance" not in check:
            return data
        methods = {
            **data["methods"],
            "integrated_gradients": {**ig, "completeness_tolerance": check["tolerance"]},
        }
        return {**data, "methods": methods}

    @field_validator("class_names", mode="before")
    @classmethod
    def _class_names(cls, value: Any) -> Any:
        return None if value is None else read_class_names(value)

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> Any:
        # One message for every wrong shape (a union's own errors list each member's complaint).
        allowed = "predicted, label, a class index >= 0, a list of these, or {top: k} with k >= 1"

        def single(entry: Any) -> bool:
            return entry in ("predicted", "label") or (type(entry) is int and entry >= 0)

        if isinstance(value, Mapping):
            top = value.get("top")
            if set(value) != {"top"} or type(top) is not int or top < 1:
                raise ValueError(f"must be {allowed}; got {_brief(dict(value))}")
            return value
        if isinstance(value, list):
            if not value:
                raise ValueError(f"is an empty list; it must be {allowed}")
            wrong = [entry for entry in value if not single(entry)]
            if wrong:
                raise ValueError(
                    f"lists {_brief(wrong[0])}; each entry of a list of targets is predicted, label or a "
                    "class index >= 0"
                )
            slots = target_slots(value)
            repeated = sorted({slot for slot in slots if slots.count(slot) > 1})
            if repeated:
                raise ValueError(f"repeats {', '.join(repeated)}; name each target once")
            return value
        if not single(value):
            raise ValueError(f"must be {allowed}; got {_brief(value)}")
        return value

    def target_slots(self) -> list[str]:
        """The names of this audit's targets (``config.target_slots``)."""
        return target_slots(self.target)

    @model_validator(mode="after")
    def _some_method(self) -> AuditConfig:
        if not self.methods.enabled():
            valid = ", ".join(MethodsConfig.model_fields)
            raise ValueError(f"methods must enable at least one method; valid methods: {valid}")
        ig = self.methods.integrated_gradients
        check = self.checks.completeness.tolerance
        if ig is not None and ig.n_steps == "auto" and ig.completeness_tolerance > check:
            raise ValueError(
                f"methods.integrated_gradients.completeness_tolerance {ig.completeness_tolerance:g} is "
                f"looser than checks.completeness.tolerance {check:g}: samples that n_steps 'auto' calls "
                f"converged could still fail the check; drop it (it then follows the check) or set it "
                f"<= {check:g}"
            )
        if self.output_key is not None and self.output_index is not None:
            raise ValueError(
                "output_key (a dict key) and output_index (a tuple index) exclude each other; "
                "set the one that fits the model's output"
            )
        return self


def _mapping_at(data: Any, *keys: str) -> Mapping[str, Any] | None:
    """The mapping at ``data[k1][k2]...``, or None where any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data if isinstance(data, Mapping) else None


# --------------------------------------------------------------------------------------------------
# Loading and error messages


def load_config(source: str | Path | Mapping[str, Any] | None = None, **overrides: Any) -> AuditConfig:
    """Build an ``AuditConfig`` from a YAML file, a mapping, or nothing (the defaults).

    ``overrides`` are merged over the source, nested mappings key by key.
    """
    if source is None:
        data: Any = {}
    elif isinstance(source, Mapping):
        data = dict(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_yaml_problem(exc)}") from None
        if data is None:
            data = {}
    else:
        raise ConfigError(f"config must be a path to a YAML file or a mapping, got {type(source).__name__}")
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a mapping of keys to values, got {type(data).__name__}")
    data = _deep_merge(data, overrides)
    try:
        return AuditConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint on one line, with where it is (1-based line and column)."""
    problem = getattr(exc, "problem", None) or str(exc)
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: `key.path must be <what is allowed>, got <value>`."""
    schema = AuditConfig.model_json_schema()
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"] if not _is_union_branch(p)]
        path = ".".join(loc) or "config"
        if err["type"] == "extra_forbidden":
            parent = ".".join(loc[:-1])
            valid = _valid_keys(schema, loc[:-1])
            where = f" in {parent}" if parent else ""
            lines.append(f"unknown key {loc[-1]!r}{where}; valid keys: {', '.join(valid)}")
        elif err["type"] == "value_error":
            message = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{path}: {message}" if loc else message)
        else:
            allowed = _describe(schema, loc) or err["msg"].lower()
            lines.append(f"{path} must be {allowed}, got {_show(err.get('input'))}")
    # A union reports one error per branch; keep each distinct line once, in order.
    return "invalid config: " + "; ".join(dict.fromkeys(lines))


def _is_union_branch(part: Any) -> bool:
    # pydantic adds the branch tag of a union (e.g. 'literal['predicted','label']', 'int') to loc.
    return isinstance(part, str) and (
        part.startswith(("literal[", "function-", "constrained-")) or part in {"int", "str", "float"}
    )


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in node:
        non_null = [n for n in node["anyOf"] if n.get("type") != "null"]
        if len(non_null) == 1:
            return _resolve(schema, non_null[0])
    return node


def _node_at(schema: dict[str, Any], loc: list[str]) -> dict[str, Any] | None:
    node = _resolve(schema, schema)
    for part in loc:
        if part.isdigit() and node.get("type") == "array":
            node = _resolve(schema, node.get("items", {}))
            continue
        props = node.get("properties") or {}
        if part in props:
            node = _resolve(schema, props[part])
        elif isinstance(node.get("additionalProperties"), dict):  # a mapping of names to values
            node = _resolve(schema, node["additionalProperties"])
        else:
            return None
    return node


def _valid_keys(schema: dict[str, Any], loc: list[str]) -> list[str]:
    node = _node_at(schema, loc)
    return sorted((node or {}).get("properties", {}))


def _describe(schema: dict[str, Any], loc: list[str]) -> str | None:
    node = _node_at(schema, loc)
    return None if node is None else _describe_node(schema, node)


def _describe_node(schema: dict[str, Any], node: dict[str, Any]) -> str:
    node = _resolve(schema, node)
    if "anyOf" in node:
        return " or ".join(_describe_node(schema, n) for n in node["anyOf"])
    if "const" in node:
        return repr(node["const"])
    if "enum" in node:
        return "one of " + ", ".join(repr(v) for v in node["enum"])
    kind = node.get("type")
    bounds = []
    for key, op in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<=")):
        if key in node:
            bounds.append(f"{op} {node[key]}")
    if kind == "integer":
        text = "an integer"
    elif kind == "number":
        text = "a number"
    elif kind == "string":
        text = f"a string matching {node['pattern']}" if "pattern" in node else "a string"
    elif kind == "boolean":
        text = "true or false"
    elif kind == "array":
        text = f"a list of {_plural(_describe_node(schema, node.get('items', {})))}"
    elif kind == "object":
        text = "a mapping with keys " + ", ".join(sorted(node.get("properties", {})))
    elif kind == "null":
        text = "null"
    else:
        text = "a valid value"
    return " ".join([text, *bounds])


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            head, _, rest = text[len(article) :].partition(" ")
            return f"{head}s {rest}".strip()
    return text


def dump_config(config: AuditConfig) -> str:
    """The config as YAML, exactly as validated (logged with every run)."""
    # Disabled methods and unset options are left out, so that the file loads back to this config.
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)
