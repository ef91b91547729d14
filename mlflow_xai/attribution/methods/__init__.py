"""Attribution methods, one adapter file per Captum algorithm family, found by name in a registry.

Importing this package registers every method (``register`` refuses a name twice). Each adapter's
parameter model lives in ``attribution.parameters``, which the config schema reads without torch.

May import: ``attribution`` (baselines, quadrature, adaptive, parameters), ``model``, ``checks``,
``seeding``, ``errors``, Captum.
"""

from mlflow_xai.attribution.methods import (  # noqa: F401  (importing a module registers its methods)
    deeplift,
    gradients,
    guided,
    integrated_gradients,
    noise_tunnel,
    occlusion,
    perturbation,
    text,
)
from mlflow_xai.attribution.methods.base import Attribution, AttributionMethod, build, register, registered

__all__ = ["Attribution", "AttributionMethod", "build", "register", "registered"]
