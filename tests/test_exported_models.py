"""Models as MLflow logs them by default (pt2 exported graphs) and models logged in train mode."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mlflow_xai.artifacts import write_artifacts
from mlflow_xai.cli import main
from mlflow_xai.engine import audit
from mlflow_xai.errors import ModelError
from mlflow_xai.model import training_mode_ops

FAST = {"methods": {"integrated_gradients": {"n_steps": 4}}, "artifacts": {"sheet_samples": 0}}


class BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


def net(mode: str) -> BatchNormNet:
    torch.manual_seed(0)
    model = BatchNormNet()
    with torch.no_grad():  # running statistics unlike a batch's own, so the two modes differ
        model.bn.running_mean.fill_(0.3)
        model.bn.running_var.fill_(2.0)
    return model.train() if mode == "train" else model.eval()


def images(n: int = 4) -> np.ndarray:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1)).numpy()


def export(model: nn.Module, rows: int) -> nn.Module:
    """What mlflow.pytorch.log_model does in its default pt2 format: torch.export, batch dim auto."""
    example = torch.from_numpy(images(rows))
    dims = {"x": {0: torch.export.Dim.AUTO}}
    return torch.export.export(model, (example,), dynamic_shapes=dims).module()


def test_a_graph_exported_in_train_mode_is_refused_before_any_compute():
    exported = export(net("train"), rows=2)
    assert training_mode_ops(exported) == ["aten.batch_norm.default", "aten.dropout.default"]
    with pytest.raises(ModelError, match="exported in training mode") as err:
        audit(exported, images(), FAST)
    assert "model.eval() before mlflow.pytorch.log_model" in str(err.value)


def test_a_graph_exported_in_eval_mode_is_audited():
    exported = export(net("eval"), rows=2)
    assert training_mode_ops(exported) == []
    report = audit(exported, images(), FAST)
    reference = audit(net("eval"), images(), FAST)
    np.testing.assert_allclose(
        np.asarray(report.methods["integrated_gradients"].attributions, np.float32),
        np.asarray(reference.methods["integrated_gradients"].attributions, np.float32),
        rtol=1e-2,
        atol=1e-3,
    )


def test_a_graph_with_a_static_batch_of_one_is_refused_with_how_to_re_export():
    exported = export(net("eval"), rows=1)
    with pytest.raises(ModelError, match="exported with a static batch of 1") as err:
        audit(exported, images(), FAST)
    assert "input_example of 2 or more rows" in str(err.value)
    with pytest.raises(ModelError, match="static batch of 1"):  # IG passes many points for one sample
        audit(exported, images(1), FAST)


class AlwaysDropout(nn.Module):
    """A module that drops whatever its mode: F.dropout(training=True) in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.dropout(x.flatten(1), 0.5, training=True))


def test_a_model_whose_output_is_random_is_refused():
    with pytest.raises(ModelError, match="the model's output is random: two passes over the same 2 inputs"):
        audit(AlwaysDropout(), images(), FAST)


def test_a_module_in_train_mode_is_audited_in_eval_mode_and_the_report_says_so(tmp_path):
    model = net("train")
    report = audit(model, images(), FAST)
    assert model.training  # restored
    reference = audit(net("eval"), images(), FAST)
    np.testing.assert_array_equal(
        np.asarray(report.methods["integrated_gradients"].attributions),
        np.asarray(reference.methods["integrated_gradients"].attributions),
    )
    assert report.model_was_training and not reference.model_was_training
    folder = write_artifacts(report, tmp_path / "out")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["model_mode"] == "eval (the model came in train mode)"
    assert "The model came in train mode" in (folder / "report.html").read_text()


def test_the_cli_refuses_mlflows_default_export_of_a_one_row_example(tracking_store, tmp_path, capsys):
    x = images()
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(
            net("eval"), name="model", input_example=x[:1], pip_requirements=["torch"]
        )
    probe = tmp_path / "probe.npz"
    np.savez(probe, inputs=x)
    capsys.readouterr()
    code = main(["audit", "--model-uri", info.model_uri, "--probe", str(probe), "--experiment", "pt2"])
    err = capsys.readouterr().err
    assert code == 2
    assert "exported with a static batch of 1" in err and len(err.strip().splitlines()) == 1
    experiment = mlflow.get_experiment_by_name("pt2")
    assert experiment is None or not mlflow.search_runs([experiment.experiment_id], output_format="list")
