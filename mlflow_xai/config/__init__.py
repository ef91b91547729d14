"""The audit configuration: one YAML schema, validated once where it enters; every later stage trusts
an ``AuditConfig``.

Owns the schema (``audit_config``, ``sections``, ``targets``), reading class indices and names
(``classes``), loading and dumping (``loading``) and the one-line validation messages (``messages``).
Each method's parameters are not here: they live with the methods, in ``attribution.parameters``.

May import: ``strict``, ``errors``, and from ``attribution/`` only ``attribution.parameters`` (pure
pydantic), so a config loads without torch or Captum.
"""

from mlflow_xai.attribution.parameters import (
    IG_POINTS_PER_PASS,
    IG_VALUES_PER_PASS,
    NOISE_TUNNEL_METHODS,
    PARAMETERS,
    BaselineConfig,
    DeconvolutionConfig,
    DeepLiftConfig,
    DeepLiftShapConfig,
    FeatureAblationConfig,
    FeatureMaskConfig,
    GradientShapConfig,
    GuidedBackpropConfig,
    GuidedGradCamConfig,
    InputXGradientConfig,
    IntegratedGradientsConfig,
    KernelShapConfig,
    LayerGradCamConfig,
    LimeConfig,
    NoiseTunnelConfig,
    OcclusionConfig,
    SaliencyConfig,
    ShapleyValueSamplingConfig,
    check_occlusion_windows,
)
from mlflow_xai.attribution.parameters import RULES as INTEGRATION_RULES
from mlflow_xai.config.audit_config import OUTPUTS, AuditConfig, MethodsConfig
from mlflow_xai.config.classes import CLASS_INDEX_LAYOUTS, class_index_of, read_class_index, read_class_names
from mlflow_xai.config.loading import dump_config, load_config
from mlflow_xai.config.messages import format_validation_error
from mlflow_xai.config.sections import (
    ArtifactsConfig,
    ChecksConfig,
    CompletenessConfig,
    DistributedConfig,
    GateConfig,
    PrecisionConfig,
    PreprocessConfig,
    ProbeConfig,
    ThresholdConfig,
    check_display_channels,
)
from mlflow_xai.config.targets import Target, TopTargets, target_entries, target_slots
from mlflow_xai.strict import NonNegativeFloat, PositiveInt, keys_of_kind

__all__ = [
    "DeconvolutionConfig",
    "DeepLiftConfig",
    "DeepLiftShapConfig",
    "FeatureAblationConfig",
    "FeatureMaskConfig",
    "GradientShapConfig",
    "GuidedBackpropConfig",
    "GuidedGradCamConfig",
    "InputXGradientConfig",
    "KernelShapConfig",
    "LayerGradCamConfig",
    "LimeConfig",
    "NoiseTunnelConfig",
    "SaliencyConfig",
    "ShapleyValueSamplingConfig",
    "NOISE_TUNNEL_METHODS",
    "PARAMETERS",
    "ArtifactsConfig",
    "AuditConfig",
    "BaselineConfig",
    "CLASS_INDEX_LAYOUTS",
    "ChecksConfig",
    "CompletenessConfig",
    "DistributedConfig",
    "GateConfig",
    "IG_POINTS_PER_PASS",
    "IG_VALUES_PER_PASS",
    "INTEGRATION_RULES",
    "IntegratedGradientsConfig",
    "MethodsConfig",
    "NonNegativeFloat",
    "OUTPUTS",
    "OcclusionConfig",
    "PositiveInt",
    "PrecisionConfig",
    "PreprocessConfig",
    "ProbeConfig",
    "Target",
    "ThresholdConfig",
    "TopTargets",
    "check_display_channels",
    "check_occlusion_windows",
    "class_index_of",
    "dump_config",
    "format_validation_error",
    "keys_of_kind",
    "load_config",
    "read_class_index",
    "read_class_names",
    "target_entries",
    "target_slots",
]
