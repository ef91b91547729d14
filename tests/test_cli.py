"""``mlflow-xai audit`` as a CI job runs it: exit codes, one-line errors, the run it logs."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.models import infer_signature


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "mlflow_xai.cli", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.fixture
def logged(tracking_store, small_cnn, shapes16, tmp_path):
    _, probe = shapes16
    example = probe.images[:2]
    with torch.no_grad():
        signature = infer_signature(example, small_cnn(torch.from_numpy(example)).numpy())
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(
            small_cnn,
            name="model",
            signature=signature,
            input_example=example,
            serialization_format="pickle",
        )
    probe_path = tmp_path / "probe.npz"
    np.savez(probe_path, inputs=probe.images[:6], labels=probe.labels[:6], ids=probe.ids[:6])
    return info.model_uri, probe_path


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_audit_passes_and_fails_by_its_checks(logged, tmp_path):
    model_uri, probe = logged
    # A linear-path rule with many steps meets a loose tolerance; an impossible tolerance fails.
    loose = _write(
        tmp_path,
        "loose.yaml",
        "methods:\n  integrated_gradients:\n    n_steps: 64\nchecks:\n  completeness:\n    tolerance: 10.0\n",
    )
    strict = _write(
        tmp_path,
        "strict.yaml",
        "methods:\n  integrated_gradients:\n    n_steps: 2\nchecks:\n  completeness:\n    tolerance: 0.0\n",
    )
    ok = _cli(
        "audit",
        "--model-uri",
        model_uri,
        "--probe",
        str(probe),
        "--config",
        loose,
        "--experiment",
        "gate",
        "--output-dir",
        "out",
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "verdict: pass" in ok.stdout
    assert (tmp_path / "out" / "summary.json").is_file()
    bad = _cli(
        "audit",
        "--model-uri",
        model_uri,
        "--probe",
        str(probe),
        "--config",
        strict,
        "--experiment",
        "gate",
        cwd=tmp_path,
    )
    assert bad.returncode == 1, bad.stderr[-2000:]
    assert "verdict: fail" in bad.stdout
    runs = mlflow.search_runs(experiment_names=["gate"], output_format="list")
    assert sorted(r.data.tags["xai.verdict"] for r in runs) == ["fail", "pass"]
    for run in runs:
        assert {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "xai")} >= {"xai/summary.json"}


@pytest.mark.parametrize(
    ("config_text", "probe_name", "message"),
    [
        (
            "methods:\n  integrated_gradients:\n    n_steps: '50'\n",
            None,
            'methods.integrated_gradients.n_steps must be an integer >= 1',
        ),
        ("methods: [1, 2]\n", None, "methods must be a mapping"),
        ("seed: 1\n", "missing.npz", "probe file"),
    ],
)
def test_bad_input_exits_2_with_one_line(logged, tmp_path, config_text, probe_name, message):
    model_uri, probe = logged
    config = _write(tmp_path, "c.yaml", config_text)
    probe_arg = str(tmp_path / probe_name) if probe_name else str(probe)
    out = _cli("audit", "--model-uri", model_uri, "--probe", probe_arg, "--config", config, cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlflow-xai: error: "), out.stderr[-2000:]
    assert message in lines[0]
    assert "Traceback" not in out.stderr


def test_non_pytorch_model_exits_2(tracking_store, tmp_path, logged):
    from sklearn.linear_model import LogisticRegression

    _, probe = logged
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(np.random.rand(10, 3), np.arange(10) % 2), name="model"
        )
    out = _cli("audit", "--model-uri", info.model_uri, "--probe", str(probe), cwd=tmp_path)
    assert out.returncode == 2
    assert "is not a PyTorch model (its flavors: python_function, sklearn)" in out.stderr
    missing = _cli(
        "audit", "--model-uri", "runs:/0123456789abcdef/model", "--probe", str(probe), cwd=tmp_path
    )
    assert missing.returncode == 2
    assert "cannot load model 'runs:/0123456789abcdef/model'" in missing.stderr
