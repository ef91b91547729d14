"""The audit configuration: one YAML schema, validated once where it enters.

Every later stage trusts an ``AuditConfig``. Validation is strict: ``n_steps: "50"`` is an error, not
a coerced 50, and every error names the key path, the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from mlflow_xai.attribution.parameters import (
    DeconvolutionConfig,
    DeepLiftConfig,
    DeepLiftShapConfig,
    FeatureAblationConfig,
    GradientShapConfig,
    GuidedBackpropConfig,
    GuidedGradCamConfig,
    InputXGradientConfig,
    IntegratedGradientsConfig,
    KernelShapConfig,
    LayerGradCamConfig,
    LayerGradientShapConfig,
    LayerIntegratedGradientsConfig,
    LimeConfig,
    NoiseTunnelConfig,
    OcclusionConfig,
    SaliencyConfig,
    ShapleyValueSamplingConfig,
    TokenKernelShapConfig,
    TokenLimeConfig,
    TokenOcclusionConfig,
)
from mlflow_xai.config.classes import read_class_names
from mlflow_xai.config.sections import (
    ArtifactsConfig,
    ChecksConfig,
    DistributedConfig,
    GateConfig,
    PrecisionConfig,
    ProbeConfig,
    TextConfig,
)
from mlflow_xai.config.targets import Target, TopTargets, target_slots
from mlflow_xai.strict import PositiveInt, _Strict, brief

OUTPUTS = ("logit", "probability", "log_probability")


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
    layer_integrated_gradients: LayerIntegratedGradientsConfig | None = None
    token_occlusion: TokenOcclusionConfig | None = None
    token_kernel_shap: TokenKernelShapConfig | None = None
    token_lime: TokenLimeConfig | None = None
    layer_gradient_shap: LayerGradientShapConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_means_defaults(cls, data: Any) -> Any:
        # `occlusion:` with no value (YAML null) or `{}` both mean "run with the defaults".
        if isinstance(data, Mapping):
            return {k: ({} if v is None else v) for k, v in data.items()}
        return data

    def enabled(self) -> dict[str, _Strict]:
        return {name: cfg for name, cfg in self if cfg is not None}


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
    text: TextConfig = TextConfig()
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
                raise ValueError(f"must be {allowed}; got {brief(dict(value))}")
            return value
        if isinstance(value, list):
            if not value:
                raise ValueError(f"is an empty list; it must be {allowed}")
            wrong = [entry for entry in value if not single(entry)]
            if wrong:
                raise ValueError(
                    f"lists {brief(wrong[0])}; each entry of a list of targets is predicted, label or a "
                    "class index >= 0"
                )
            slots = target_slots(value)
            repeated = sorted({slot for slot in slots if slots.count(slot) > 1})
            if repeated:
                raise ValueError(f"repeats {', '.join(repeated)}; name each target once")
            return value
        if not single(value):
            raise ValueError(f"must be {allowed}; got {brief(value)}")
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
