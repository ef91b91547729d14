"""Auditing queued model versions: each against the version holding the baseline alias, then tags.

A job audits ``models:/<name>/<version>``, the URI built from the registry's name and version,
never from the delivery's free text, with ``mlflow-xai audit`` in a child process (its own memory,
its own signal handling; on Linux it dies with the receiver). The audit logs into a run made for the
job and kept in the queue, with ``--resume`` and a batch cache per job, so a receiver killed mid-audit
finishes the same run on restart. Then the version gets the tags ``xai.gate`` (pass, warn, fail or
error) and ``xai.audit_run_id``, and with ``assign_alias`` the alias, on pass only. A failing audit
(exit code 2, or no verdict) is retried with exponential backoff, ``max_attempts`` times, and then
tagged ``error`` with ``xai.audit_error``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

from mlflow_xai.registry.queue import Job, JobQueue


@dataclass(frozen=True)
class ServeSettings:
    probe: str
    config: str | None = None
    baseline_alias: str | None = None
    assign_alias: str | None = None
    experiment: str = "xai-registry"
    cache_dir: str = ".mlflow-xai-serve/cache"
    max_attempts: int = 3
    backoff: float = 5.0


class AuditFailed(Exception):
    pass


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Worker:
    def __init__(self, queue: JobQueue, settings: ServeSettings, client: MlflowClient | None = None) -> None:
        self.queue = queue
        self.settings = settings
        self.client = client or MlflowClient()

    def run(self, stop: threading.Event, poll: float = 0.5) -> None:
        while not stop.is_set():
            job = self.queue.claim()
            if job is None:
                stop.wait(poll)
                continue
            self.process(job)

    def process(self, job: Job) -> None:
        try:
            status, run_id = self.audit(job)
        except Exception as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if not self.queue.fail(
                job, reason, max_attempts=self.settings.max_attempts, backoff=self.settings.backoff
            ):
                self._tag(job, {"xai.audit_error": reason[:4000], "xai.gate": "error"})
            return
        # xai.gate goes last: whoever waits for it finds the run id and the alias already there.
        self._tag(job, {"xai.audit_run_id": run_id})
        if self.settings.assign_alias and status == "pass":
            self.client.set_registered_model_alias(job.name, self.settings.assign_alias, job.version)
        self._tag(job, {"xai.gate": status})
        self.queue.finish(job, status)

    def audit(self, job: Job) -> tuple[str, str]:
        """Audit the job's version; its gate status and the audit run's id."""
        settings = self.settings
        self.client.get_model_version(job.name, job.version)  # the registry must know it
        run_id = job.run_id or self._new_run(job)
        uri = f"models:/{job.name}/{job.version}"
        argv = [
            sys.executable, "-m", "mlflow_xai.cli", "audit", "--model-uri", uri, "--probe", settings.probe,
            "--run-id", run_id, "--cache-dir", str(Path(settings.cache_dir) / f"{job.name}-{job.version}"),
            "--resume", "--quiet",
        ]  # fmt: skip
        if settings.config:
            argv += ["--config", settings.config]
        baseline = self._baseline(job)
        if baseline:
            argv += ["--baseline-model-uri", baseline]
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=os.environ.copy(),
            preexec_fn=_die_with_parent,
            check=False,
        )
        status = self.client.get_run(run_id).data.tags.get("xai.gate")
        if done.returncode == 2 or status is None:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise AuditFailed(lines[-1] if lines else f"the audit exited with code {done.returncode}")
        return status, run_id

    def _new_run(self, job: Job) -> str:
        experiment = self.client.get_experiment_by_name(self.settings.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment
            else self.client.create_experiment(self.settings.experiment)
        )
        run = self.client.create_run(
            experiment_id,
            run_name=f"xai-{job.name}-v{job.version}",
            tags={"mlflow_xai.registered_model": job.name, "mlflow_xai.model_version": job.version},
        )
        self.queue.set_run(job, run.info.run_id)
        return run.info.run_id

    def _baseline(self, job: Job) -> str | None:
        alias = self.settings.baseline_alias
        if not alias:
            return None
        try:
            holder = self.client.get_model_version_by_alias(job.name, alias)
        except Exception:  # no version holds it yet: the first version has nothing to compare with
            return None
        return None if holder.version == job.version else f"models:/{job.name}/{holder.version}"

    def _tag(self, job: Job, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(job.name, job.version, key, value)
