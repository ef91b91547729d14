"""Audits at a real Lightning Trainer's fit: the XaiAudit callback, and mlflow_xai.autolog with
mlflow.pytorch.autolog()."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch
import torch.nn as nn
from mlflow import MlflowClient

import mlflow_xai

pl = pytest.importorskip("pytorch_lightning")
import mlflow_xai.lightning  # noqa: E402  (needs pytorch_lightning)

CONFIG = {"methods": {"integrated_gradients": {"n_steps": 8}}, "artifacts": {"sheet_samples": 0}}


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def _loader(seed: int) -> torch.utils.data.DataLoader:
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(seed))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)


@pytest.fixture
def probe(tmp_path):
    x = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)
    np.savez(tmp_path / "probe.npz", inputs=x, labels=(x[:, 0] > 0).astype(np.int64))
    return str(tmp_path / "probe.npz")


def _trainer(**options) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=2, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, log_every_n_steps=1, **options,
    )  # fmt: skip


def test_the_callback_audits_every_epoch_into_the_mlflow_loggers_run(tracking_store, probe):
    from pytorch_lightning.loggers import MLFlowLogger

    torch.manual_seed(0)
    logger = MLFlowLogger(experiment_name="lightning", tracking_uri=tracking_store)
    callback = mlflow_xai.lightning.XaiAudit(probe, CONFIG, every_n_epochs=1)
    module = Classifier()
    _trainer(logger=logger, callbacks=[callback]).fit(module, _loader(1), _loader(2))
    client = MlflowClient(tracking_store)
    history = client.get_metric_history(logger.run_id, "xai/integrated_gradients/completeness_rel_error_max")
    assert sorted(m.step for m in history) == [0, 1]  # one audit per epoch; the end of fit adds none
    assert callback.audited_steps == [0, 1]
    assert "xai/report.html" in [a.path for a in client.list_artifacts(logger.run_id, "xai")]
    assert module.training is True  # the audit put the module back in train mode


def test_the_callback_without_epochs_audits_once_at_the_end_of_fit(tracking_store, probe):
    from pytorch_lightning.loggers import MLFlowLogger

    logger = MLFlowLogger(experiment_name="lightning", tracking_uri=tracking_store)
    callback = mlflow_xai.lightning.XaiAudit(probe, CONFIG)
    _trainer(logger=logger, callbacks=[callback]).fit(Classifier(), _loader(1), _loader(2))
    history = MlflowClient(tracking_store).get_metric_history(logger.run_id, "xai/probe/samples")
    assert [m.step for m in history] == [1]
    with pytest.raises(ValueError, match="every_n_epochs"):
        mlflow_xai.lightning.XaiAudit(probe, CONFIG, every_n_epochs=0)


def test_autolog_audits_the_model_mlflow_pytorch_autolog_logs_at_the_end_of_fit(tracking_store, probe):
    mlflow.pytorch.autolog(log_models=True)
    mlflow_xai.autolog(probe=probe, config=CONFIG)
    try:
        torch.manual_seed(0)
        _trainer().fit(Classifier(), _loader(1), _loader(2))
    finally:
        mlflow_xai.autolog(disable=True)
        mlflow.pytorch.autolog(disable=True)
    (run,) = mlflow.search_runs(output_format="list")
    assert run.data.metrics["xai/probe/samples"] == 12.0
    assert "xai.autolog_model_id" in run.data.tags
    assert "val_loss" in run.data.metrics  # MLflow's own autolog went on as usual
