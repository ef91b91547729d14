"""Log an AuditReport into an MLflow run: one batch of metrics and tags, one artifact upload."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

from mlflow_xai.artifacts.write import write_artifacts
from mlflow_xai.report.audit_report import AuditReport

ARTIFACT_PATH = "xai"
T = TypeVar("T")
_log = logging.getLogger(__name__)


def log_pytorch_model(
    model: Any,
    example: Any,
    *,
    serialization_format: str = "pickle",
    pip_requirements: list[str] | None = None,
) -> str:
    """Log a PyTorch model into the active run with a tensor signature and an input example (a
    float numpy batch), so that an audit can read the input shape from it; return its model URI.

    ``serialization_format="pickle"`` keeps the layers as modules, which hook-based methods need;
    ``"pt2"`` (MLflow's default) logs an exported graph. ``pip_requirements`` (default: MLflow infers
    them, loading the model in a subprocess) is passed on.
    """
    import mlflow
    import torch
    from mlflow.models import infer_signature

    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    info = mlflow.pytorch.log_model(
        model,
        name="model",
        signature=signature,
        input_example=example,
        serialization_format=serialization_format,
        pip_requirements=pip_requirements,
    )
    return info.model_uri


def with_retries(
    action: Callable[[], T],
    *,
    attempts: int = 4,
    first_delay: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``action``; on an error retry it with exponential backoff (1 s, 2 s, 4 s, ...).

    Uploads to a shared tracking server fail transiently (timeouts, 5xx, a restarting server);
    the last error is raised once every attempt has failed.
    """
    for attempt in range(attempts):
        try:
            return action()
        except Exception as exc:
            if attempt == attempts - 1:
                raise
            delay = first_delay * 2**attempt
            _log.warning("upload failed (%s); retrying in %.0f s", type(exc).__name__, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def log_report(
    report: AuditReport,
    run_id: str,
    *,
    log_metrics: bool = True,
    client: MlflowClient | None = None,
    extra_metrics: dict[str, float] | None = None,
    extra_files: dict[str, str] | None = None,
    extra_tags: dict[str, str] | None = None,
    gate: Any = None,
    folder: str | Path | None = None,
    step: int = 0,
    model_id: str | None = None,
) -> list[str]:
    """Write the artifacts to a local folder, upload it once under ``xai/``, then log metrics.

    ``log_metrics=False`` leaves the metrics to the caller (``mlflow.models.evaluate`` logs an
    evaluator's returned metrics itself when it knows the model id). ``extra_files`` maps a path
    inside ``xai/`` to its text (e.g. the gate's result). ``folder`` (an empty folder the caller
    owns and removes) keeps the written files after the upload, for a caller that reads them again
    (the evaluator loads them into ``EvaluationResult.artifacts``); by default a temporary folder
    is used and removed. ``step`` and ``model_id`` go with every metric (an audit per checkpoint).

    Returns the uploaded files' paths in the run (``xai/summary.json``, ...), sorted: read from the
    folder that was uploaded, so the caller can name them without listing the store again.
    """
    client = client or MlflowClient()
    if folder is None:
        place: Any = tempfile.TemporaryDirectory(prefix="mlflow-xai-")
    else:
        place = nullcontext(str(folder))
    with place as local:
        write_artifacts(report, local, gate=gate)
        for relative, text in (extra_files or {}).items():
            (Path(local) / relative).write_text(text, encoding="utf-8")
        with_retries(lambda: client.log_artifacts(run_id, local, artifact_path=ARTIFACT_PATH))
        uploaded = sorted(
            f"{ARTIFACT_PATH}/{path.relative_to(local).as_posix()}"
            for path in Path(local).rglob("*")
            if path.is_file()
        )
    now = int(time.time() * 1000)
    values = {**report.metrics(), **(extra_metrics or {})} if log_metrics else {}
    metrics = [Metric(k, float(v), now, step, model_id=model_id) for k, v in values.items()]
    tags = {
        "xai.verdict": report.verdict,
        "xai.probe_sha256": report.probe_sha256,
        "xai.methods": ",".join(report.methods),
        **(extra_tags or {}),
    }
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    return uploaded


def client_for(tracking_uri: str | None) -> MlflowClient:
    """A client of ``tracking_uri`` (a logger's own), or of the current tracking URI."""
    return MlflowClient(tracking_uri=tracking_uri) if tracking_uri else MlflowClient()


def active_run_id() -> str | None:
    """The id of the active MLflow run, if one is active."""
    import mlflow

    run = mlflow.active_run()
    return None if run is None else run.info.run_id
