"""Shared fixtures: a real sqlite tracking store per test and a small trained shapes CNN."""

from __future__ import annotations

import os

import mlflow
import pytest
import torch

from mlflow_xai.datasets import make_shapes
from mlflow_xai.datasets.cnn import ShapesCNN, train_shapes_cnn


@pytest.fixture(autouse=True)
def user_cache_dir(tmp_path_factory, monkeypatch):
    """The user cache directory (resume caches) of every test: a temporary one, never ~/.cache."""
    path = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(path))
    return path


@pytest.fixture
def tracking_store(tmp_path, monkeypatch):
    """A fresh sqlite tracking store (the embedded default's kind) in a temporary directory."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)
    # mlflow.set_experiment (the demo uses it) is process-wide; the next store has no such id.
    mlflow.tracking.fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # set_experiment also exports it


@pytest.fixture(scope="session")
def shapes16():
    """600 training and 40 probe images of 16x16 pixels."""
    data = make_shapes(640, size=16, seed=3)
    return data.subset(slice(0, 600)), data.subset(slice(600, None))


@pytest.fixture(scope="session")
def small_cnn(shapes16) -> ShapesCNN:
    torch.set_num_threads(2)
    train, _ = shapes16
    return train_shapes_cnn(train, epochs=3, width=8, seed=0)
