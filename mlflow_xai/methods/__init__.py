"""Attribution methods, one adapter each, found by name in a registry."""

from mlflow_xai.methods import integrated_gradients, occlusion  # noqa: F401  (registers them)
from mlflow_xai.methods.base import Attribution, AttributionMethod, build, register, registered

__all__ = ["Attribution", "AttributionMethod", "build", "register", "registered"]
