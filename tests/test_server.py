"""Against a real ``mlflow server`` over HTTP: the evaluator, the CLI, and two audits at once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import numpy as np
import pytest
from helpers import log_pytorch_model
from mlflow import MlflowClient

AUDIT = {
    "methods": {"integrated_gradients": {"n_steps": 16}, "saliency": {}},
    "artifacts": {"sheet_samples": 2},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [
            mlflow_bin,
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'store.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(1)
    try:
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def remote(server, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(server)
    yield server
    mlflow.set_tracking_uri(None)


def test_evaluator_over_http(remote, small_cnn, shapes16, tmp_path):
    _, probe = shapes16
    uri = log_pytorch_model(small_cnn, probe.images[:2])
    with mlflow.start_run() as run:
        result = mlflow.models.evaluate(
            uri,
            data=probe.images[:5].reshape(5, -1),
            targets=probe.labels[:5],
            model_type="image_classifier",
            evaluators=["xai"],
            evaluator_config={"xai": AUDIT},
        )
    client = MlflowClient()
    logged = client.get_run(run.info.run_id).data.metrics
    for name, value in result.metrics.items():
        assert logged[name] == pytest.approx(value)
        assert len(client.get_metric_history(run.info.run_id, name)) == 1
    local = client.download_artifacts(run.info.run_id, "xai", str(tmp_path))
    with np.load(f"{local}/integrated_gradients/masks.npz") as masks:
        assert masks["attributions"].shape == (5, 3, 16, 16)
    assert os.path.getsize(f"{local}/report.html") > 1000


def test_two_cli_audits_at_once_do_not_clash(remote, small_cnn, shapes16, tmp_path):
    _, probe = shapes16
    uri = log_pytorch_model(small_cnn, probe.images[:2])
    np.savez(tmp_path / "probe.npz", inputs=probe.images[:6], labels=probe.labels[:6], ids=probe.ids[:6])
    config = tmp_path / "c.yaml"
    config.write_text(
        "methods:\n  integrated_gradients:\n    n_steps: 16\nchecks:\n  completeness:\n    tolerance: 100.0\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": remote}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow_xai.cli",
                "audit",
                "--model-uri",
                uri,
                "--probe",
                "probe.npz",
                "--config",
                str(config),
                "--experiment",
                "concurrent",
                "--junit",
                f"j{i}.xml",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    runs = mlflow.search_runs(experiment_names=["concurrent"], output_format="list")
    assert len(runs) == 2
    client = MlflowClient()
    metrics = []
    for run in runs:
        assert run.data.tags["xai.gate"] == "pass"
        assert len(client.get_metric_history(run.info.run_id, "xai/integrated_gradients/samples")) == 1
        listed = {a.path for a in client.list_artifacts(run.info.run_id, "xai")}
        assert {"xai/summary.json", "xai/per_sample.csv", "xai/gate.json"} <= listed
        metrics.append({k: v for k, v in run.data.metrics.items() if not k.endswith("seconds")})
    # Same model, probe and config: the two runs hold the same numbers, each its own.
    assert metrics[0] == metrics[1]
