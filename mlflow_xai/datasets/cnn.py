"""The small CNN the examples train on the shapes set, and its training loop."""

from __future__ import annotations

import torch
import torch.nn as nn

from mlflow_xai.datasets.shapes import SHAPE_CLASSES, ShapesData


class ShapesCNN(nn.Module):
    """Three conv blocks and a linear head; ``features.conv3`` is the layer GradCAM looks at."""

    def __init__(self, num_classes: int = len(SHAPE_CLASSES), width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv1", nn.Conv2d(3, width, 3, padding=1))
        self.features.add_module("relu1", nn.ReLU())
        self.features.add_module("pool1", nn.MaxPool2d(2))
        self.features.add_module("conv2", nn.Conv2d(width, 2 * width, 3, padding=1))
        self.features.add_module("relu2", nn.ReLU())
        self.features.add_module("pool2", nn.MaxPool2d(2))
        self.features.add_module("conv3", nn.Conv2d(2 * width, 4 * width, 3, padding=1))
        self.features.add_module("relu3", nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def train_shapes_cnn(
    train: ShapesData,
    *,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    width: int = 16,
) -> ShapesCNN:
    """Train a ShapesCNN on ``train`` on the CPU, deterministically from ``seed``."""
    torch.manual_seed(seed)
    model = ShapesCNN(width=width)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=lr, total_steps=epochs * ((len(train) + batch_size - 1) // batch_size)
    )
    x_all = torch.from_numpy(train.images)
    y_all = torch.from_numpy(train.labels)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: ShapesData, batch_size: int = 256) -> float:
    correct = 0
    for start in range(0, len(data), batch_size):
        x = torch.from_numpy(data.images[start : start + batch_size])
        correct += int((model(x).argmax(1).numpy() == data.labels[start : start + batch_size]).sum())
    return correct / len(data)


__all__ = ["ShapesCNN", "accuracy", "train_shapes_cnn"]
