"""Log an AuditReport into an MLflow run: one batch of metrics and tags, one artifact upload."""

from __future__ import annotations

import tempfile
import time

from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

from mlflow_xai.artifacts import write_artifacts
from mlflow_xai.report import AuditReport

ARTIFACT_PATH = "xai"


def log_report(
    report: AuditReport, run_id: str, *, log_metrics: bool = True, client: MlflowClient | None = None
) -> None:
    """Write the artifacts to a local folder, upload it once under ``xai/``, then log metrics.

    ``log_metrics=False`` leaves the metrics to the caller (``mlflow.models.evaluate`` logs an
    evaluator's returned metrics itself when it knows the model id).
    """
    client = client or MlflowClient()
    with tempfile.TemporaryDirectory(prefix="mlflow-xai-") as folder:
        write_artifacts(report, folder)
        client.log_artifacts(run_id, folder, artifact_path=ARTIFACT_PATH)
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in report.metrics().items()] if log_metrics else []
    tags = [
        RunTag("xai.verdict", report.verdict),
        RunTag("xai.probe_sha256", report.probe_sha256),
        RunTag("xai.methods", ",".join(report.methods)),
    ]
    client.log_batch(run_id, metrics=metrics, tags=tags)
