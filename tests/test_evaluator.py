"""End to end through ``mlflow.models.evaluate`` on a real sqlite tracking store."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch
from helpers import log_pytorch_model
from mlflow import MlflowClient
from mlflow.models import MetricThreshold

AUDIT = {
    "batch_size": 16,
    "methods": {
        "integrated_gradients": {"n_steps": 16},
        "occlusion": {"sliding_window_shapes": [3, 4, 4], "strides": [3, 4, 4]},
    },
    "artifacts": {"sheet_samples": 3},
}


def _evaluate(model_uri, probe, config=AUDIT):
    with mlflow.start_run() as run:
        result = mlflow.models.evaluate(
            model_uri,
            data=probe.images.reshape(len(probe), -1),
            targets=probe.labels,
            model_type="image_classifier",
            evaluators=["xai"],
            evaluator_config={"xai": config},
        )
    return run.info.run_id, result


@pytest.mark.parametrize("serialization_format", ["pt2", "pickle"])
def test_evaluate_logs_metrics_once_and_artifacts(
    tracking_store, small_cnn, shapes16, serialization_format, tmp_path
):
    _, probe = shapes16
    probe = probe.subset(slice(0, 10))
    model_uri = log_pytorch_model(small_cnn, probe.images[:2], serialization_format)
    run_id, result = _evaluate(model_uri, probe)

    client = MlflowClient()
    run = client.get_run(run_id)
    for name in (
        "xai/integrated_gradients/completeness_rel_error_median",
        "xai/integrated_gradients/completeness_rel_error_p95",
        "xai/integrated_gradients/completeness_rel_error_max",
        "xai/integrated_gradients/seconds",
        "xai/occlusion/seconds",
        "xai/probe/samples",
    ):
        assert name in result.metrics
        assert isinstance(result.metrics[name], float)
        assert run.data.metrics[name] == pytest.approx(result.metrics[name])
        # Logged once, not once by the plugin and again by mlflow.models.evaluate.
        assert len(client.get_metric_history(run_id, name)) == 1, name
    assert result.metrics["xai/probe/samples"] == 10.0

    listed = {a.path for a in client.list_artifacts(run_id, "xai")}
    assert {"xai/summary.json", "xai/per_sample.csv", "xai/config.yaml"} <= listed
    local = client.download_artifacts(run_id, "xai", str(tmp_path))
    for method in ("integrated_gradients", "occlusion"):
        with np.load(f"{local}/{method}/masks.npz") as masks:
            assert masks["attributions"].shape == (10, 3, 16, 16)
            assert masks["attributions"].dtype == np.float16
            assert np.isfinite(masks["attributions"]).all()
            assert masks["ids"].tolist() == [f"{i:06d}" for i in range(10)]
        with open(f"{local}/{method}/sheet.png", "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    for figure in ("ig_completeness_vs_steps", "ig_output_along_path", "ig_gradient_along_path"):
        with open(f"{local}/integrated_gradients/{figure}.png", "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(open(f"{local}/summary.json").read())
    assert summary["metrics"] == pytest.approx(result.metrics)
    assert summary["exported_model"] is (serialization_format == "pt2")
    assert run.data.tags["xai.verdict"] == summary["verdict"]


def test_completeness_reported_is_the_true_error(tracking_store, small_cnn, shapes16, tmp_path):
    """The logged completeness errors agree with sum(masks) and F(x) - F(0) computed here."""
    _, probe = shapes16
    probe = probe.subset(slice(0, 6))
    model_uri = log_pytorch_model(small_cnn, probe.images[:2], "pickle")
    config = {**AUDIT, "artifacts": {"sheet_samples": 0, "mask_dtype": "float32"}}
    run_id, result = _evaluate(model_uri, probe, config)
    local = MlflowClient().download_artifacts(run_id, "xai", str(tmp_path))
    attributions = np.load(f"{local}/integrated_gradients/masks.npz")["attributions"]
    x = torch.from_numpy(probe.images)
    with torch.no_grad():
        logits = small_cnn(x)
        target = logits.argmax(1)
        gap = (logits - small_cnn(torch.zeros_like(x))).gather(1, target[:, None]).squeeze(1).double()
    errors = (attributions.reshape(6, -1).sum(1) - gap.numpy()).__abs__() / gap.abs().numpy()
    assert result.metrics["xai/integrated_gradients/completeness_rel_error_max"] == pytest.approx(
        errors.max(), rel=1e-3
    )
    assert result.metrics["xai/integrated_gradients/completeness_rel_error_median"] == pytest.approx(
        np.median(errors), rel=1e-3
    )


def test_mlflow_gate_accepts_the_metrics(tracking_store, small_cnn, shapes16):
    _, probe = shapes16
    probe = probe.subset(slice(0, 4))
    model_uri = log_pytorch_model(small_cnn, probe.images[:2], "pt2")
    _, result = _evaluate(model_uri, probe)
    passing = {"xai/probe/samples": MetricThreshold(threshold=4.0, greater_is_better=True)}
    mlflow.validate_evaluation_results(passing, result)
    failing = {
        "xai/integrated_gradients/completeness_rel_error_max": MetricThreshold(
            threshold=-1.0, greater_is_better=False
        )
    }
    with pytest.raises(Exception, match="completeness_rel_error_max"):
        mlflow.validate_evaluation_results(failing, result)


def test_configured_input_shape_overrides_the_signature(tracking_store, small_cnn, shapes16):
    _, probe = shapes16
    probe = probe.subset(slice(0, 3))
    model_uri = log_pytorch_model(small_cnn, probe.images[:2], "pickle")
    with pytest.raises(Exception, match=r"input shape \[3, 8, 8\] needs 192"):
        _evaluate(model_uri, probe, {**AUDIT, "input_shape": [3, 8, 8]})
    _, result = _evaluate(model_uri, probe, {**AUDIT, "input_shape": [3, 16, 16]})
    assert result.metrics["xai/probe/samples"] == 3.0
