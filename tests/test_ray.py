"""engine: ray on a local two-CPU Ray cluster: the same audit as the local engine, sample for sample."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.models import infer_signature

import mlflow_xai
from mlflow_xai.config import load_config
from mlflow_xai.engine import prepare_probe

ray = pytest.importorskip("ray", reason="engine: ray needs the ray extra (pip install 'mlflow-xai[ray]')")

from mlflow_xai.cli import main  # noqa: E402
from mlflow_xai.distributed import BatchWorker, audit_on_ray  # noqa: E402

CONFIG = {
    "batch_size": 8,
    "methods": {
        "integrated_gradients": {"n_steps": "auto", "max_steps": 129},
        "occlusion": {"sliding_window_shapes": [1, 4, 4], "strides": [1, 4, 4]},
        "gradient_shap": {"n_samples": 4},  # random: shows each batch is seeded by its position
    },
    "artifacts": {"sheet_samples": 2},
}


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False)
    # Workers cannot import this test module: send the classes defined here by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def probe38(shapes16):
    _, probe = shapes16
    return probe.images[:38], probe.labels[:38]  # 4 full batches and one of 6


def _assert_same_audit(local, distributed):
    assert distributed.probe.ids.tolist() == local.probe.ids.tolist()
    np.testing.assert_array_equal(distributed.predictions, local.predictions)
    np.testing.assert_array_equal(distributed.targets, local.targets)
    assert set(distributed.methods) == set(local.methods)
    for name, result in local.methods.items():
        other = distributed.methods[name]
        np.testing.assert_allclose(
            np.asarray(other.attributions, np.float32),
            np.asarray(result.attributions, np.float32),
            rtol=1e-3,
            atol=1e-4,
            err_msg=name,
        )
        if result.completeness is not None:
            np.testing.assert_allclose(
                other.completeness.rel_error, result.completeness.rel_error, rtol=1e-5, atol=1e-9
            )
        assert set(other.extras) == set(result.extras)
        for key, value in result.extras.items():
            np.testing.assert_allclose(other.extras[key], value, rtol=1e-5, err_msg=f"{name} {key}")
    same = lambda m: {k: v for k, v in m.items() if not k.endswith("seconds")}  # noqa: E731
    assert same(distributed.metrics()).keys() == same(local.metrics()).keys()
    for key, value in same(local.metrics()).items():
        assert distributed.metrics()[key] == pytest.approx(value, rel=1e-4, abs=1e-6, nan_ok=True), key


def test_ray_engine_matches_the_local_engine(ray_cluster, small_cnn, probe38):
    images, labels = probe38
    local = mlflow_xai.audit(small_cnn, images, CONFIG, labels=labels)
    distributed = mlflow_xai.audit(
        small_cnn, images, {**CONFIG, "distributed": {"engine": "ray", "num_actors": 2}}, labels=labels
    )
    assert len(distributed.probe) == 38
    assert "steps" in distributed.methods["integrated_gradients"].extras  # per-sample adaptive steps
    _assert_same_audit(local, distributed)
    assert ray.is_initialized()  # a session the caller opened stays open


def test_ray_engine_matches_the_local_engine_with_several_targets(ray_cluster, small_cnn, probe38):
    images, labels = probe38[0][:12], probe38[1][:12]
    config = {
        **CONFIG,
        "target": [0, "label", "predicted"],
        "methods": {"occlusion": CONFIG["methods"]["occlusion"], "saliency": {}},
    }
    local = mlflow_xai.audit(small_cnn, images, config, labels=labels)
    distributed = mlflow_xai.audit(
        small_cnn, images, {**config, "distributed": {"engine": "ray", "num_actors": 2}}, labels=labels
    )
    assert sorted(distributed.methods)[:3] == ["occlusion/class_0", "occlusion/label", "occlusion/predicted"]
    for name, result in local.methods.items():
        np.testing.assert_array_equal(distributed.methods[name].targets, result.targets, err_msg=name)
    _assert_same_audit(local, distributed)


class DiesOnFirstBatch(BatchWorker):
    """An actor process that exits on its first batch, once per marker file (as a lost node would)."""

    marker: str = ""

    def __call__(self, batch):
        marker = Path(self.marker)
        if not marker.exists():
            marker.touch()
            os._exit(1)
        return super().__call__(batch)


def test_a_worker_killed_mid_audit_is_restarted_and_nothing_is_lost(
    ray_cluster, small_cnn, probe38, tmp_path
):
    images, labels = probe38
    marker = tmp_path / "died"
    worker = type("DiesOnce", (DiesOnFirstBatch,), {"marker": str(marker)})
    cfg = load_config({**CONFIG, "distributed": {"engine": "ray", "num_actors": 1, "max_restarts": 2}})
    probe = prepare_probe(images, cfg, labels=labels)
    distributed = audit_on_ray(small_cnn, probe, cfg, worker_class=worker)
    assert marker.exists()  # the actor really died once
    local = mlflow_xai.audit(small_cnn, images, CONFIG, labels=labels)
    _assert_same_audit(local, distributed)


def test_cli_engine_ray_logs_the_same_run_as_a_local_audit(
    ray_cluster, tracking_store, small_cnn, probe38, tmp_path, capsys
):
    images, labels = probe38
    with torch.no_grad():
        signature = infer_signature(images[:2], small_cnn(torch.from_numpy(images[:2])).numpy())
    with mlflow.start_run():
        uri = mlflow.pytorch.log_model(
            small_cnn,
            name="model",
            signature=signature,
            serialization_format="pickle",
            pip_requirements=["torch"],
        ).model_uri
    np.savez(tmp_path / "probe.npz", inputs=images[:20], labels=labels[:20])
    (tmp_path / "gate.yaml").write_text(
        "batch_size: 8\nmax_samples: 20\nmethods:\n  integrated_gradients:\n    n_steps: auto\n"
        "  occlusion:\n    sliding_window_shapes: [1, 4, 4]\n    strides: [1, 4, 4]\n"
        "artifacts:\n  sheet_samples: 2\n"
        "gate:\n  thresholds:\n    xai/integrated_gradients/converged_fraction:\n"
        "      fail: 0.5\n      higher_is_better: true\n"
    )
    args = ["audit", "--model-uri", uri, "--probe", "probe.npz", "--config", "gate.yaml", "--experiment", "e"]
    assert main([*args, "--engine", "local", "--quiet"]) == 0
    import ray.data  # noqa: F401  (sets up the "ray.data" logger's handlers)

    console = [h for h in logging.getLogger("ray.data").handlers if type(h).__name__ == "PlainRayHandler"]
    assert console, "Ray Data's console handler: the check below would see nothing"
    levels = [h.level for h in console]
    capsys.readouterr()
    assert main([*args, "--engine", "ray", "--quiet"]) == 0
    # Ray Data's execution plan and progress blocks (logged, since stdout is no terminal here) stay
    # in its session log, off the console; its console handler is as it was once the audit is done.
    err = capsys.readouterr().err
    assert "Execution plan" not in err and "Running Dataset" not in err
    assert [h.level for h in console] == levels
    local, distributed = mlflow.search_runs(
        experiment_names=["e"], output_format="list", order_by=["attributes.start_time"]
    )
    client = MlflowClient()

    def files(run_id, path="xai"):
        out = set()
        for item in client.list_artifacts(run_id, path):
            out |= files(run_id, item.path) if item.is_dir else {item.path}
        return out

    assert files(distributed.info.run_id) == files(local.info.run_id)
    assert "xai/per_sample.csv" in files(local.info.run_id)
    assert distributed.data.metrics.keys() == local.data.metrics.keys()
    for key, value in local.data.metrics.items():
        if not key.endswith("seconds"):
            assert distributed.data.metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert distributed.data.tags["xai.gate"] == local.data.tags["xai.gate"] == "pass"
    assert main(["gate", "--run-id", distributed.info.run_id, "--config", "gate.yaml", "--quiet"]) == 0
