"""The Ray engine (``distributed.engine: ray``): a pool of Ray actors attributes the probe set's batches.

The probe set streams through Ray Data one batch per row; each actor loads the model once and calls
the same ``BatchAttributor.run`` the local executor does, so a batch's result does not depend on the
engine or on which actor ran it. The driver gathers the per-sample columns the actors return into a
``BatchAccumulator`` (which refuses a batch that arrives twice and, at the end, samples never
attributed) and builds the same ``AuditReport`` a local audit builds. A failed actor is restarted
and its batch retried by Ray (``max_restarts``, ``max_task_retries``); nothing is dropped silently.

Ray is an optional dependency: ``pip install 'mlflow-xai[ray]'``.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch.nn as nn

from mlflow_xai.config.audit_config import AuditConfig
from mlflow_xai.config.sections import DistributedConfig
from mlflow_xai.engine.batch import BatchAttributor, BatchResult
from mlflow_xai.engine.cache import BatchCache
from mlflow_xai.engine.progress import AuditProgress
from mlflow_xai.engine.run import audit_prepared
from mlflow_xai.errors import ConfigError, ModelError
from mlflow_xai.probe.memory import release_pages
from mlflow_xai.probe.probe_set import ProbeSet
from mlflow_xai.report.audit_report import AuditReport


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(
            "distributed.engine 'ray' needs Ray Data, which is not installed: pip install 'mlflow-xai[ray]'"
        ) from None
    return ray


@contextmanager
def quiet_ray_data_console() -> Iterator[None]:
    """Within the block, Ray Data's console lines at WARNING and above only.

    Ray Data prints the execution plan and, when stdout is not a terminal, a progress block every few
    seconds; in a CI log they bury the verdict. Its file log in the Ray session directory keeps
    everything. The command line uses this unless ``--debug``; a library caller's logging is theirs.
    """
    import ray.data  # noqa: F401  (configures the "ray.data" logger's handlers on import)

    console = [
        handler
        for handler in logging.getLogger("ray.data").handlers
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
    ]
    levels = [handler.level for handler in console]
    for handler in console:
        handler.setLevel(max(handler.level, logging.WARNING))
    try:
        yield
    finally:
        for handler, level in zip(console, levels, strict=True):
            handler.setLevel(level)


class BatchWorker:
    """One Ray actor: loads the model once, then attributes whole probe batches (one per input row)."""

    def __init__(self, model: Any, cfg: AuditConfig, probe_mean: np.ndarray | None) -> None:
        if not isinstance(model, nn.Module):  # an ObjectRef Ray Data did not resolve
            import ray

            model = ray.get(model)
        self.attributor = BatchAttributor(model, cfg, probe_mean=probe_mean)
        # The actor lives for the whole audit: the model stays in audit mode on its device.
        self._session = self.attributor.session()
        self._session.__enter__()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        columns = [
            result_columns(self.attributor.run(int(start), *decode_batch(payload)))
            for start, payload in zip(batch["start"], batch["payload"], strict=True)
        ]
        return {key: np.concatenate([c[key] for c in columns]) for key in columns[0]}


def encode_batch(inputs: np.ndarray, labels: np.ndarray | None, ids: np.ndarray) -> bytes:
    """One probe batch as ``.npz`` bytes: a row of the input dataset holds a whole batch, so the
    actors see exactly the batches (and seeds) a local audit sees."""
    buffer = io.BytesIO()
    arrays = {"inputs": np.ascontiguousarray(inputs), "ids": np.asarray(ids).astype(str)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode_batch(payload: bytes) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as data:
        labels = data["labels"] if "labels" in data.files else None
        return data["inputs"], labels, data["ids"]


def result_columns(result: BatchResult) -> dict[str, np.ndarray]:
    """A ``BatchResult`` as per-sample columns; a method's seconds go on the batch's first row."""
    return result.columns(per_sample=True)


def batch_result(columns: dict[str, np.ndarray]) -> BatchResult:
    """The inverse of ``result_columns`` for the rows of one batch."""
    return BatchResult.from_columns(columns)


class _Reassembler:
    """Per-sample rows arrive in blocks of any size; whole batches leave, each exactly once."""

    def __init__(self, n: int, batch_size: int) -> None:
        self.n = n
        self.batch_size = batch_size
        self.pending: dict[int, list[dict[str, np.ndarray]]] = {}

    def expected(self, start: int) -> int:
        return min(self.batch_size, self.n - start)

    def add(self, block: dict[str, np.ndarray]) -> Iterator[BatchResult]:
        starts = block["start"]
        for start in np.unique(starts):
            rows = starts == start
            parts = self.pending.setdefault(int(start), [])
            parts.append({key: value[rows] for key, value in block.items()})
            count = sum(len(p["start"]) for p in parts)
            if count > self.expected(int(start)):
                raise RuntimeError(f"batch at {int(start)} arrived twice")
            if count == self.expected(int(start)):
                del self.pending[int(start)]
                merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
                yield batch_result(merged)

    def check_done(self) -> None:
        if self.pending:
            start = min(self.pending)
            raise RuntimeError(f"batch at {start} came back incomplete from the Ray workers")


@contextmanager
def ray_cluster(dist: DistributedConfig) -> Iterator[Any]:
    """Join the configured cluster (``ray_address``, else ``$RAY_ADDRESS``) or start a local one.

    A connection made here is closed after the audit, which stops only a cluster started here; a
    Ray session the caller already opened is used as it is and left open.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = dist.ray_address or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        ray.init(num_cpus=dist.local_num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


class RayExecutor:
    """The engine's executor for ``distributed.engine: ray``: batches go to a pool of Ray actors.

    The run loop (``engine.audit_prepared``) is the local one: preflight, the resume cache, the
    gathering of results and the report do not depend on the executor."""

    def __init__(self, cfg: AuditConfig, worker_class: type[BatchWorker] = BatchWorker) -> None:
        import_ray()  # fails before any compute when Ray is missing
        self.dist = cfg.distributed or DistributedConfig(engine="ray")
        self.worker_class = worker_class

    def batch_size(self, cfg: AuditConfig) -> int:
        return self.dist.batch_size or cfg.batch_size

    def run(
        self,
        attributor: BatchAttributor,
        probe: ProbeSet,
        starts: list[int],
        batch_size: int,
        progress: AuditProgress,
    ) -> Iterator[BatchResult]:
        with ray_cluster(self.dist) as ray:
            dataset, refs = self._dataset(ray, attributor, probe, starts, batch_size)
            reassembler = _Reassembler(len(probe), batch_size)
            for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                for result in reassembler.add(block):
                    for name in attributor.methods:
                        progress.advance(name, len(result.ids))
                    yield result
            reassembler.check_done()
            del refs

    def _dataset(
        self, ray: Any, attributor: BatchAttributor, probe: ProbeSet, starts: list[int], batch_size: int
    ) -> tuple[Any, list[Any]]:
        import pyarrow as pa

        # Batches go into the object store one at a time (it spills to disk when full), so the
        # driver's memory holds one batch, not the probe set.
        refs = []
        for start in starts:
            stop = min(start + batch_size, len(probe))
            labels = None if probe.labels is None else np.asarray(probe.labels[start:stop])
            payload = encode_batch(np.asarray(probe.inputs[start:stop]), labels, probe.ids[start:stop])
            release_pages(probe.inputs)
            table = pa.table({"start": [start], "payload": pa.array([payload], pa.large_binary())})
            refs.append(ray.put(table))
        model_ref = ray.put(_on_cpu(attributor.model))
        dist = self.dist
        with warnings.catch_warnings():
            # Ray 2.60 deprecates actor options passed through map_batches' **ray_remote_args but has
            # no named parameter for these two yet (pyproject caps Ray below 2.64, which removes it).
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            dataset = ray.data.from_arrow_refs(refs).map_batches(
                self.worker_class,
                batch_size=1,  # one row is one whole probe batch
                batch_format="numpy",
                fn_constructor_kwargs={
                    "model": model_ref,
                    "cfg": attributor.cfg,
                    "probe_mean": attributor.probe_mean_input,
                },
                compute=ray.data.ActorPoolStrategy(size=dist.num_actors),
                num_cpus=dist.num_cpus,
                num_gpus=dist.num_gpus,
                max_restarts=dist.max_restarts,
                max_task_retries=dist.max_task_retries,
            )
        return dataset, [*refs, model_ref]


def audit_on_ray(
    model: nn.Module,
    probe: ProbeSet,
    cfg: AuditConfig,
    *,
    cache: BatchCache | None = None,
    probe_sha256: str | None = None,
    worker_class: type[BatchWorker] = BatchWorker,
) -> AuditReport:
    """``engine.audit_prepared`` with the batches attributed by a pool of Ray actors.

    Batches found in ``cache`` are reused; every batch computed is added to it as it arrives.
    """
    executor = RayExecutor(cfg, worker_class)
    return audit_prepared(model, probe, cfg, cache=cache, probe_sha256=probe_sha256, executor=executor)


def _on_cpu(model: nn.Module) -> nn.Module:
    """The model as the actors receive it: on the CPU (each actor moves it to its own device)."""
    devices = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    if devices <= {"cpu"}:
        return model
    try:
        return copy.deepcopy(model).to("cpu")
    except Exception as exc:
        raise ModelError(f"cannot copy the model to the CPU to send it to the Ray actors: {exc}") from None
