"""MLflow: the evaluator plugin (``evaluator``, ``evaluate``) and logging a report into a run (``log``).
With ``cli/``, the only place that imports MLflow.

This package imports nothing heavy on import: MLflow loads the evaluator for every evaluation.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "autolog": "mlflow_xai.tracking.autolog",
    "metric_thresholds": "mlflow_xai.tracking.thresholds",
    "ARTIFACT_PATH": "mlflow_xai.tracking.log",
    "T": "mlflow_xai.tracking.log",
    "log_pytorch_model": "mlflow_xai.tracking.log",
    "with_retries": "mlflow_xai.tracking.log",
    "log_report": "mlflow_xai.tracking.log",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "autolog",
    "metric_thresholds",
    "ARTIFACT_PATH",
    "T",
    "log_pytorch_model",
    "log_report",
    "with_retries",
]
