"""A real ``mlflow server`` with a registry webhook pointing at a real ``mlflow-xai serve``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pytest
import torch
import torch.nn as nn
from mlflow import MlflowClient
from mlflow.entities.webhook import WebhookEvent

SECRET = "webhook-secret-for-tests"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, log=None):  # noqa: ANN001
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    extra = "" if log is None else f"\n--- log ---\n{open(log).read()[-3000:]}"
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry-server")
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",  # the receiver listens on plain http here
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",  # on 127.0.0.1
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",  # each test's new webhook is seen within a second
    }
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{root / 'store.db'}", "--artifacts-destination", str(root / "artifacts"), "--host",
         "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        _wait(healthy, 180, "mlflow server", root / "server.log")
        yield uri, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


class Receiver:
    """``mlflow-xai serve`` in its own process group, started and killed at will."""

    def __init__(self, tracking_uri: str, folder, probe, config) -> None:  # noqa: ANN001
        self.port = _free_port()
        self.folder, self.probe, self.config, self.tracking_uri = folder, probe, config, tracking_uri
        self.log_path = folder / "receiver.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_XAI_WEBHOOK_SECRET": SECRET}
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow_xai.cli", "serve", "--probe", str(self.probe), "--config",
             str(self.config), "--baseline-alias", "champion", "--assign-alias", "audited", "--port",
             str(self.port), "--state-dir", str(self.folder / "state"), "--backoff", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )  # fmt: skip

        def up() -> bool:
            try:
                return "jobs" in _get(f"{self.url}/health")
            except OSError:
                return False

        _wait(up, 60, "mlflow-xai serve", self.log_path)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)

    def jobs(self) -> dict:
        return _get(f"{self.url}/health")["jobs"]


@pytest.fixture
def receiver(server, tmp_path):
    uri, _ = server
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 5)).astype(np.float32)
    np.savez(tmp_path / "probe.npz", inputs=x, labels=(x[:, 0] > 0).astype(np.int64))
    (tmp_path / "audit.yaml").write_text(
        "methods: {integrated_gradients: {n_steps: 16}}\nartifacts: {sheet_samples: 0}\nbatch_size: 16\n",
        encoding="utf-8",
    )
    r = Receiver(uri, tmp_path, tmp_path / "probe.npz", tmp_path / "audit.yaml")
    r.start()
    client = MlflowClient(uri)
    webhook = client.create_webhook(
        name=f"xai-{tmp_path.name}", url=f"{r.url}/webhook",
        events=[WebhookEvent("model_version", "created")], secret=SECRET,
    )  # fmt: skip
    try:
        yield r, client
    finally:
        client.delete_webhook(webhook.webhook_id)
        r.kill()


def _register(uri: str, name: str, seed: int) -> str:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run():
            info = mlflow.pytorch.log_model(
                model, name="model", serialization_format="pickle", pip_requirements=["torch"],
                registered_model_name=name,
            )  # fmt: skip
    finally:
        mlflow.set_tracking_uri(None)
    return str(info.registered_model_version)


def test_a_registered_version_arrives_audited_and_forgeries_do_nothing(server, receiver):
    uri, _ = server
    r, client = receiver
    version = _register(uri, "xai-webhook-model", 0)
    tags = _wait(
        lambda: "xai.gate" in (t := client.get_model_version("xai-webhook-model", version).tags) and t,
        240, "the version's xai.gate tag", r.log_path,
    )  # fmt: skip
    assert tags["xai.gate"] in ("pass", "warn", "fail"), tags
    run = client.get_run(tags["xai.audit_run_id"])
    assert run.data.metrics["xai/probe/samples"] == 48.0
    assert run.data.tags["mlflow_xai.model_uri"] == f"models:/xai-webhook-model/{version}"
    if tags["xai.gate"] == "pass":
        assert client.get_model_version_by_alias("xai-webhook-model", "audited").version == version
    before = r.jobs()
    body = json.dumps({"entity": "model_version", "action": "created", "data": {"name": "x", "version": "1"}})
    forged = urllib.request.Request(
        f"{r.url}/webhook", data=body.encode(), method="POST",
        headers={"Content-Type": "application/json", "X-MLflow-Signature": "v1,AAAA",
                 "X-MLflow-Timestamp": str(int(time.time())), "X-MLflow-Delivery-Id": "forged"},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(forged, timeout=5)
    assert err.value.code == 401
    assert r.jobs() == before


def test_a_receiver_killed_mid_audit_tags_the_version_once_after_restart(server, receiver):
    uri, _ = server
    r, client = receiver
    version = _register(uri, "xai-webhook-killed", 1)
    _wait(lambda: r.jobs().get("running"), 120, "the audit to start", r.log_path)
    r.kill()
    r.start()  # the same state folder: the running job resumes
    tags = _wait(
        lambda: "xai.gate" in (t := client.get_model_version("xai-webhook-killed", version).tags) and t,
        240, "the version's xai.gate tag after the restart", r.log_path,
    )  # fmt: skip
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments() if e.name == "xai-registry"],
        filter_string="tags.mlflow_xai.registered_model = 'xai-webhook-killed' and "
        f"tags.mlflow_xai.model_version = '{version}'",
    )
    assert [run.info.run_id for run in runs] == [tags["xai.audit_run_id"]]  # one audit run, finished
    assert r.jobs() == {"done": 1}
