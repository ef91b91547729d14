"""Log an AuditReport into an MLflow run: one batch of metrics and tags, one artifact upload."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

from mlflow_xai.artifacts import write_artifacts
from mlflow_xai.report import AuditReport

ARTIFACT_PATH = "xai"


def log_report(
    report: AuditReport,
    run_id: str,
    *,
    log_metrics: bool = True,
    client: MlflowClient | None = None,
    extra_metrics: dict[str, float] | None = None,
    extra_files: dict[str, str] | None = None,
    extra_tags: dict[str, str] | None = None,
) -> None:
    """Write the artifacts to a local folder, upload it once under ``xai/``, then log metrics.

    ``log_metrics=False`` leaves the metrics to the caller (``mlflow.models.evaluate`` logs an
    evaluator's returned metrics itself when it knows the model id). ``extra_files`` maps a path
    inside ``xai/`` to its text (e.g. the gate's result).
    """
    client = client or MlflowClient()
    with tempfile.TemporaryDirectory(prefix="mlflow-xai-") as folder:
        write_artifacts(report, folder)
        for relative, text in (extra_files or {}).items():
            (Path(folder) / relative).write_text(text, encoding="utf-8")
        client.log_artifacts(run_id, folder, artifact_path=ARTIFACT_PATH)
    now = int(time.time() * 1000)
    values = {**report.metrics(), **(extra_metrics or {})} if log_metrics else {}
    metrics = [Metric(k, float(v), now, 0) for k, v in values.items()]
    tags = {
        "xai.verdict": report.verdict,
        "xai.probe_sha256": report.probe_sha256,
        "xai.methods": ",".join(report.methods),
        **(extra_tags or {}),
    }
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
