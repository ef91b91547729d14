"""Helpers the test modules share (imported as ``from helpers import ...``; tests/ is on sys.path)."""

from __future__ import annotations

import mlflow
import torch
import torch.nn as nn

from mlflow_xai import tracking

#: Requirements given, not inferred: MLflow infers them by loading the model in a subprocess that
#: imports mlflow.pytorch, which imports pytorch_lightning when it is installed (~15 s a model here).
REQUIREMENTS = ["torch"]


def log_pytorch_model(model, example, serialization_format: str = "pickle") -> str:
    """Log ``model`` in a new run of the active tracking store with a tensor signature; its URI."""
    with mlflow.start_run():
        return tracking.log_pytorch_model(
            model, example, serialization_format=serialization_format, pip_requirements=REQUIREMENTS
        )


def rel_error(attributions: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """|sum(a) - gap| / |gap| per sample in float64, written here independently of the package."""
    total = attributions.double().flatten(1).sum(dim=1)
    return (total - gap.double()).abs() / gap.double().abs()


def target_column(model: nn.Module):
    """F(x, target): the model's score of each sample's target class."""

    def f(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return model(x).gather(1, target.view(-1, 1)).squeeze(1)

    return f


def relu_cnn(seed: int = 0) -> nn.Sequential:
    """Six 3x3 conv layers with ReLUs and a linear head: a small VGG-like ReLU CNN."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate([(3, 8), (8, 8), (8, 16), (16, 16), (16, 16), (16, 16)]):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
        if i in (1, 3):
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
