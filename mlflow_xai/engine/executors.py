"""Who attributes an audit's batches: an executor takes the batch starts still to do and yields one
``BatchResult`` per batch, in any order. The run loop (``engine.run``) does everything else the same
way for every executor: preflight, the resume cache, gathering, the report.

``LocalExecutor`` runs them in this process. Others are named by ``distributed.engine`` and found in
``EXECUTORS`` (module and class), imported only when an audit asks for one: the engine never imports
``distributed`` or Ray itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Protocol

from mlflow_xai.config.audit_config import AuditConfig
from mlflow_xai.engine.batch import BatchAttributor, BatchResult
from mlflow_xai.engine.progress import AuditProgress
from mlflow_xai.probe.probe_set import ProbeSet


class Executor(Protocol):
    def batch_size(self, cfg: AuditConfig) -> int:
        """Probe samples per batch (a batch is the unit of seeding, caching and distribution)."""
        ...

    def run(
        self,
        attributor: BatchAttributor,
        probe: ProbeSet,
        starts: list[int],
        batch_size: int,
        progress: AuditProgress,
    ) -> Iterator[BatchResult]:
        """The results of the batches that begin at ``starts``, each exactly once."""
        ...


class LocalExecutor:
    """The batches attributed one after another by this process's model."""

    def batch_size(self, cfg: AuditConfig) -> int:
        return cfg.batch_size

    def run(
        self,
        attributor: BatchAttributor,
        probe: ProbeSet,
        starts: list[int],
        batch_size: int,
        progress: AuditProgress,
    ) -> Iterator[BatchResult]:
        todo = set(starts)
        for batch in probe.batches(batch_size):
            if batch.start in todo:
                yield attributor.run(batch.start, batch.inputs, batch.labels, batch.ids, progress)


#: ``distributed.engine`` -> (module, class) of its executor, built with the audit's config.
EXECUTORS = {"ray": ("mlflow_xai.distributed.ray", "RayExecutor")}


def executor_for(cfg: AuditConfig) -> Executor:
    """The executor ``cfg.distributed.engine`` names (``local`` when there is no such section)."""
    engine = "local" if cfg.distributed is None else cfg.distributed.engine
    if engine == "local":
        return LocalExecutor()
    module, name = EXECUTORS[engine]
    return getattr(importlib.import_module(module), name)(cfg)
