"""The audit engine: probe set x methods -> attributions -> checks -> an ``AuditReport``.

Owns the per-batch step (``batch``), the gathering of batches (``accumulate``), the resume cache
(``cache``), the checks made before the first batch (``preflight``), progress lines (``progress``)
and the run itself (``run``), which hands batches to an executor: ``LocalExecutor`` here, others
(``distributed``'s Ray executor) found by name.

May import: ``config``, ``probe``, ``model``, ``attribution``, ``checks``, ``report``. Never MLflow,
``distributed`` or ``artifacts``: the engine runs and is tested without a tracking server.
"""

from mlflow_xai.engine.accumulate import BatchAccumulator
from mlflow_xai.engine.batch import BatchAttributor, BatchResult, MethodBatch, resolve_targets
from mlflow_xai.engine.cache import BatchCache, default_cache_dir, model_fingerprint
from mlflow_xai.engine.executors import EXECUTORS, Executor, LocalExecutor, executor_for
from mlflow_xai.engine.run import (
    IG_FIGURE_STEPS,
    audit,
    audit_prepared,
    build_report,
    check_audit_inputs,
    finish_report,
    prepare_probe,
)

__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "executor_for",
    "BatchAccumulator",
    "BatchAttributor",
    "BatchCache",
    "BatchResult",
    "IG_FIGURE_STEPS",
    "MethodBatch",
    "audit",
    "audit_prepared",
    "build_report",
    "check_audit_inputs",
    "default_cache_dir",
    "finish_report",
    "model_fingerprint",
    "prepare_probe",
    "resolve_targets",
]
