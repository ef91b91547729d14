"""Import paths of the flat layout before the package was arranged by stage, for one release.

``import mlflow_xai.gate`` still works: it gives the module's new home (``mlflow_xai.ci``) and warns
once with a ``DeprecationWarning`` that names it. The packages that kept their name
(``mlflow_xai.config``, ``engine``, ``probe``, ``report``, ``model``, ``checks``, ``artifacts``,
``tracking``, ``distributed``, ``cli``) re-export what the old modules held and need nothing here.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

#: Old module path -> its new home.
MOVED = {
    "mlflow_xai.adaptive": "mlflow_xai.attribution.adaptive",
    "mlflow_xai.baselines": "mlflow_xai.attribution.baselines",
    "mlflow_xai.quadrature": "mlflow_xai.attribution.quadrature",
    "mlflow_xai.method_configs": "mlflow_xai.attribution.parameters",
    "mlflow_xai.methods": "mlflow_xai.attribution.methods",
    **{
        f"mlflow_xai.methods.{name}": f"mlflow_xai.attribution.methods.{name}"
        for name in (
            "base", "_captum", "deeplift", "gradients", "guided", "integrated_gradients", "masks",
            "noise_tunnel", "occlusion", "perturbation",
        )
    },
    "mlflow_xai.loaders": "mlflow_xai.probe.loaders",
    "mlflow_xai.progress": "mlflow_xai.engine.progress",
    "mlflow_xai.gate": "mlflow_xai.ci",
    "mlflow_xai.viz": "mlflow_xai.artifacts.viz",
    "mlflow_xai.review_plots": "mlflow_xai.artifacts.review_plots",
    "mlflow_xai.report_html": "mlflow_xai.artifacts.report_html",
    "mlflow_xai.provenance": "mlflow_xai.artifacts.provenance",
    "mlflow_xai.ig_plots": "mlflow_xai.artifacts.ig_figures",
    "mlflow_xai.evaluator": "mlflow_xai.tracking.evaluator",
    "mlflow_xai._evaluate": "mlflow_xai.tracking.evaluate",
    "mlflow_xai.demo": "mlflow_xai.cli.demo",
    "mlflow_xai.allocator": "mlflow_xai.cli.allocator",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old path with the module at its new home (the same object, not a copy)."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec] = {}  # by old name, until exec_module

    def find_spec(self, fullname: str, path: object = None, target: object = None):  # noqa: ANN201
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there (the old path goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__  # importlib overwrites __spec__; put it back
        return module

    def exec_module(self, module: ModuleType) -> None:
        # importlib has just set __spec__ to the old path's spec; the module keeps its own.
        module.__spec__ = self._specs.pop(module.__spec__.name)


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())  # before the path finder: no second copy
