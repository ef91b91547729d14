"""Attribution methods, one adapter each, found by name in a registry."""

from mlflow_xai.methods import (  # noqa: F401  (importing a module registers its methods)
    deeplift,
    gradients,
    guided,
    integrated_gradients,
    noise_tunnel,
    occlusion,
    perturbation,
)
from mlflow_xai.methods.base import Attribution, AttributionMethod, build, register, registered

__all__ = ["Attribution", "AttributionMethod", "build", "register", "registered"]
