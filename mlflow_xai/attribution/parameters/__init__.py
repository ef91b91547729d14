"""The parameter models of every attribution method, one file per method family as in ``methods/``,
and ``PARAMETERS``: the registry of them by method name, which the config's ``methods:`` section is
built from.

Pure pydantic: the config schema imports this package (and nothing else) from ``attribution/``, so
that a config loads without torch or Captum. A method runs when its key is present under
``methods:``; its value is validated by the model here. Every argument the Captum algorithm takes
is a key, under Captum's own name where one exists. Methods that draw random numbers take a
``seed``: the same seed gives the same result. Baselines live in the model's input space (after
preprocessing): see ``BaselineConfig``.

May import: ``strict``, ``attribution.quadrature`` (the rule names).
"""

from __future__ import annotations

from collections.abc import Iterable

from mlflow_xai.attribution.parameters.common import BaselineConfig, FeatureMaskConfig
from mlflow_xai.attribution.parameters.deeplift import DeepLiftConfig, DeepLiftShapConfig
from mlflow_xai.attribution.parameters.gradients import (
    GradientShapConfig,
    InputXGradientConfig,
    SaliencyConfig,
)
from mlflow_xai.attribution.parameters.guided import (
    DeconvolutionConfig,
    GuidedBackpropConfig,
    GuidedGradCamConfig,
    LayerGradCamConfig,
)
from mlflow_xai.attribution.parameters.integrated_gradients import (
    IG_POINTS_PER_PASS,
    IG_VALUES_PER_PASS,
    IntegratedGradientsConfig,
)
from mlflow_xai.attribution.parameters.noise_tunnel import NOISE_TUNNEL_METHODS, NoiseTunnelConfig
from mlflow_xai.attribution.parameters.occlusion import OcclusionConfig, check_occlusion_windows
from mlflow_xai.attribution.parameters.perturbation import (
    FeatureAblationConfig,
    KernelShapConfig,
    LimeConfig,
    ShapleyValueSamplingConfig,
)
from mlflow_xai.attribution.parameters.text import (
    TOKEN_BASELINES,
    LayerGradientShapConfig,
    LayerIntegratedGradientsConfig,
    TokenKernelShapConfig,
    TokenLimeConfig,
    TokenOcclusionConfig,
)
from mlflow_xai.attribution.quadrature import RULES
from mlflow_xai.strict import _Strict


def parameter_registry(entries: Iterable[tuple[str, type[_Strict]]]) -> dict[str, type[_Strict]]:
    """``{method name: parameter model}`` in the order given; a name given twice is refused."""
    registry: dict[str, type[_Strict]] = {}
    for name, model in entries:
        if name in registry:
            raise ValueError(
                f"attribution method {name!r} has two parameter models: "
                f"{registry[name].__qualname__} and {model.__qualname__}"
            )
        registry[name] = model
    return registry


#: Every method's parameter model, by the key that enables it under ``methods:`` (in this order in
#: the config schema and in a dumped config).
PARAMETERS = parameter_registry(
    [
        ("integrated_gradients", IntegratedGradientsConfig),
        ("occlusion", OcclusionConfig),
        ("saliency", SaliencyConfig),
        ("input_x_gradient", InputXGradientConfig),
        ("gradient_shap", GradientShapConfig),
        ("deeplift", DeepLiftConfig),
        ("deeplift_shap", DeepLiftShapConfig),
        ("guided_backprop", GuidedBackpropConfig),
        ("deconvolution", DeconvolutionConfig),
        ("guided_gradcam", GuidedGradCamConfig),
        ("layer_gradcam", LayerGradCamConfig),
        ("feature_ablation", FeatureAblationConfig),
        ("shapley_value_sampling", ShapleyValueSamplingConfig),
        ("kernel_shap", KernelShapConfig),
        ("lime", LimeConfig),
        ("noise_tunnel", NoiseTunnelConfig),
        ("layer_integrated_gradients", LayerIntegratedGradientsConfig),
        ("token_occlusion", TokenOcclusionConfig),
        ("token_kernel_shap", TokenKernelShapConfig),
        ("token_lime", TokenLimeConfig),
        ("layer_gradient_shap", LayerGradientShapConfig),
    ]
)

__all__ = [
    "IG_POINTS_PER_PASS",
    "IG_VALUES_PER_PASS",
    "NOISE_TUNNEL_METHODS",
    "PARAMETERS",
    "RULES",
    "TOKEN_BASELINES",
    "BaselineConfig",
    "DeconvolutionConfig",
    "DeepLiftConfig",
    "DeepLiftShapConfig",
    "FeatureAblationConfig",
    "FeatureMaskConfig",
    "GradientShapConfig",
    "GuidedBackpropConfig",
    "GuidedGradCamConfig",
    "InputXGradientConfig",
    "IntegratedGradientsConfig",
    "KernelShapConfig",
    "LayerGradCamConfig",
    "LayerGradientShapConfig",
    "LayerIntegratedGradientsConfig",
    "LimeConfig",
    "NoiseTunnelConfig",
    "OcclusionConfig",
    "SaliencyConfig",
    "ShapleyValueSamplingConfig",
    "TokenKernelShapConfig",
    "TokenLimeConfig",
    "TokenOcclusionConfig",
    "check_occlusion_windows",
    "parameter_registry",
]
