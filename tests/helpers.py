"""Helpers the test modules share (imported as ``from helpers import ...``; tests/ is on sys.path)."""

from __future__ import annotations

import mlflow
import torch
from mlflow.models import infer_signature


def log_pytorch_model(model, example, serialization_format: str = "pickle") -> str:
    """Log ``model`` to the active tracking store with a tensor signature; return its model URI."""
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            serialization_format=serialization_format,
        )
    return info.model_uri
