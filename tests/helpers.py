"""Helpers the test modules share (imported as ``from helpers import ...``; tests/ is on sys.path)."""

from __future__ import annotations

import mlflow

from mlflow_xai import tracking


def log_pytorch_model(model, example, serialization_format: str = "pickle") -> str:
    """Log ``model`` in a new run of the active tracking store with a tensor signature; its URI."""
    with mlflow.start_run():
        return tracking.log_pytorch_model(model, example, serialization_format=serialization_format)
