"""mlflow-xai: audit why a PyTorch model decides what it decides, every time it is trained.

``import mlflow_xai`` stays light (MLflow imports the evaluator for every evaluation); torch and
Captum load when ``audit`` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflow_xai import _moved
from mlflow_xai._version import __version__

_moved.install()  # the old flat import paths, for one release

if TYPE_CHECKING:
    from mlflow_xai.config.audit_config import AuditConfig
    from mlflow_xai.config.loading import load_config
    from mlflow_xai.engine.run import audit
    from mlflow_xai.probe.probe_set import ProbeSet
    from mlflow_xai.report.audit_report import AuditReport
    from mlflow_xai.tracking.autolog import autolog

__all__ = ["AuditConfig", "AuditReport", "ProbeSet", "__version__", "audit", "autolog", "load_config"]

_LAZY = {
    "audit": "mlflow_xai.engine",
    "AuditConfig": "mlflow_xai.config",
    "load_config": "mlflow_xai.config",
    "ProbeSet": "mlflow_xai.probe",
    "AuditReport": "mlflow_xai.report",
    "autolog": "mlflow_xai.tracking.autolog",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mlflow_xai' has no attribute {name!r}")
