"""mlflow_xai.autolog: models logged with mlflow.pytorch.log_model are audited into their run."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch
import torch.nn as nn
from mlflow import MlflowClient

import mlflow_xai
from mlflow_xai.errors import ConfigError, ProbeError

CONFIG = {"methods": {"integrated_gradients": {"n_steps": 8}}, "artifacts": {"sheet_samples": 0}}
# Given requirements spare MLflow inferring them in a subprocess (seconds per model).
LOGGED = {"serialization_format": "pickle", "pip_requirements": ["torch"]}


@pytest.fixture
def probe(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    np.savez(tmp_path / "probe.npz", inputs=x, labels=(x[:, 0] > 0).astype(np.int64))
    return tmp_path / "probe.npz"


@pytest.fixture(autouse=True)
def autolog_off():
    yield
    mlflow_xai.autolog(disable=True)


def _train(model: nn.Module, steps: int = 20) -> None:
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] > 0).long()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def test_a_plain_loop_gets_every_logged_checkpoint_audited_into_its_run(tracking_store, probe):
    mlflow_xai.autolog(probe=str(probe), config=CONFIG)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    with mlflow.start_run() as run:
        infos = []
        for _ in range(2):  # two checkpoints
            _train(model)
            infos.append(mlflow.pytorch.log_model(model, name="model", **LOGGED))
    client = MlflowClient()
    history = client.get_metric_history(
        run.info.run_id, "xai/integrated_gradients/completeness_rel_error_max"
    )
    assert sorted(m.step for m in history) == [0, 1]
    for step, info in enumerate(infos):  # each checkpoint carries its own audit's metrics
        linked = {m.key: m for m in client.get_logged_model(info.model_id).metrics or []}
        assert linked["xai/integrated_gradients/completeness_rel_error_max"].step == step
    logged = client.get_run(run.info.run_id).data
    assert logged.tags["xai.autolog_model_id"] == infos[-1].model_id
    assert "xai.autolog_error" not in logged.tags
    assert logged.metrics["xai/probe/accuracy"] >= 0.9  # the latest checkpoint, trained twice
    paths = [a.path for a in client.list_artifacts(run.info.run_id, "xai")]
    assert "xai/report.html" in paths


def test_log_models_own_step_is_kept(tracking_store, probe):
    mlflow_xai.autolog(probe=str(probe), config=CONFIG)
    with mlflow.start_run() as run:
        mlflow.pytorch.log_model(nn.Linear(5, 2), name="model", **LOGGED, step=7)
    history = MlflowClient().get_metric_history(run.info.run_id, "xai/probe/samples")
    assert [m.step for m in history] == [7]


def test_a_bad_probe_never_breaks_training_unless_strict(tracking_store, tmp_path):
    mlflow_xai.autolog(probe=str(tmp_path / "missing.npz"), config=CONFIG)
    with mlflow.start_run() as run, pytest.warns(UserWarning, match="audit of .* failed and was skipped"):
        info = mlflow.pytorch.log_model(nn.Linear(5, 2), name="model", **LOGGED)
    assert info.model_uri  # the model is logged all the same
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    assert "does not exist" in tags["xai.autolog_error"]
    mlflow_xai.autolog(probe=str(tmp_path / "missing.npz"), config=CONFIG, strict=True)
    with mlflow.start_run(), pytest.raises(ProbeError, match="does not exist"):
        mlflow.pytorch.log_model(nn.Linear(5, 2), name="model", **LOGGED)


def test_silent_records_the_error_without_a_warning(tracking_store, tmp_path, recwarn):
    mlflow_xai.autolog(probe=str(tmp_path / "missing.npz"), config=CONFIG, silent=True)
    with mlflow.start_run() as run:
        mlflow.pytorch.log_model(nn.Linear(5, 2), name="model", **LOGGED)
    assert not [w for w in recwarn if "mlflow-xai autolog" in str(w.message)]
    assert "xai.autolog_error" in MlflowClient().get_run(run.info.run_id).data.tags


def test_disable_restores_log_model_and_a_bad_config_fails_at_once(tracking_store, probe):
    original = mlflow.pytorch.log_model
    mlflow_xai.autolog(probe=str(probe), config=CONFIG)
    assert mlflow.pytorch.log_model is not original
    mlflow_xai.autolog(probe=str(probe), config=CONFIG)  # again: one wrapper, new settings
    assert mlflow.pytorch.log_model.__wrapped__ is original
    mlflow_xai.autolog(disable=True)
    assert mlflow.pytorch.log_model is original
    with mlflow.start_run() as run:
        mlflow.pytorch.log_model(nn.Linear(5, 2), name="model", **LOGGED)
    assert not [k for k in MlflowClient().get_run(run.info.run_id).data.metrics if k.startswith("xai/")]
    with pytest.raises(ConfigError, match="unknown key"):
        mlflow_xai.autolog(probe=str(probe), config={"methods": {"nope": {}}})
    with pytest.raises(ConfigError, match="needs a probe"):
        mlflow_xai.autolog()
