"""The audit engine: probe set x methods -> attributions -> checks -> an AuditReport.

Nothing here touches MLflow; the engine runs and is tested without a tracking server.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from mlflow_xai.baselines import make_baseline
from mlflow_xai.checks import CompletenessResult
from mlflow_xai.config import (
    AuditConfig,
    TopTargets,
    check_display_channels,
    dump_config,
    load_config,
    target_entries,
)
from mlflow_xai.errors import ConfigError, ModelError, ProbeError
from mlflow_xai.ig_plots import IGPathProfiles, ig_path_profiles
from mlflow_xai.loaders import load_probe
from mlflow_xai.methods import build
from mlflow_xai.methods.base import Attribution, AttributionContext, concat_attributions
from mlflow_xai.model import (
    ModelHandle,
    audit_mode,
    is_exported_graph,
    resolve_autocast,
    resolve_device,
    tf32_mode,
    training_mode_ops,
)
from mlflow_xai.probe import FOLDER_ORDER, ProbeSet, release_pages
from mlflow_xai.progress import AuditProgress
from mlflow_xai.report import AuditReport, MethodResult, result_keys


@dataclass
class MethodBatch:
    """One method's results on one batch, as plain arrays (what a worker sends back)."""

    values: np.ndarray  # (B, *input_shape) in the mask dtype
    seconds: float
    attribution_sum: np.ndarray | None = None  # (B,) float64, before rounding to the mask dtype
    output_at_input: np.ndarray | None = None
    output_at_baseline: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class BatchResult:
    """Everything an audit keeps of one probe batch; the unit of caching and of distribution."""

    start: int
    ids: np.ndarray
    predictions: np.ndarray
    targets: np.ndarray  # (B, targets): the class each sample was explained for, per target slot
    methods: dict[str, MethodBatch]  # by result key (``BatchAttributor.result_keys``)

    def save(self, path: Path) -> None:
        """Write to ``path`` atomically (a temporary name, then a rename)."""
        arrays: dict[str, np.ndarray] = {
            "start": np.array(self.start),
            "ids": self.ids.astype(str),
            "predictions": self.predictions,
            "targets": self.targets,
        }
        for name, m in self.methods.items():
            arrays[f"{name}|values"] = m.values
            arrays[f"{name}|seconds"] = np.array(m.seconds)
            for key in ("attribution_sum", "output_at_input", "output_at_baseline"):
                if getattr(m, key) is not None:
                    arrays[f"{name}|{key}"] = getattr(m, key)
            for key, value in m.extras.items():
                arrays[f"{name}|extra|{key}"] = value
        # A name of this writer's own: two audits of the same model, config and probe set may share
        # a cache folder and write the same batch at once.
        tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> BatchResult:
        with np.load(path, allow_pickle=False) as data:
            methods: dict[str, MethodBatch] = {}
            for key in data.files:
                if "|" not in key:
                    continue
                name, _, rest = key.partition("|")
                m = methods.setdefault(name, MethodBatch(values=np.empty(0), seconds=0.0))
                if rest == "values":
                    m.values = data[key]
                elif rest == "seconds":
                    m.seconds = float(data[key])
                elif rest.startswith("extra|"):
                    m.extras[rest.removeprefix("extra|")] = data[key]
                else:
                    setattr(m, rest, data[key])
            return cls(int(data["start"]), data["ids"], data["predictions"], data["targets"], methods)


class BatchAttributor:
    """The pure per-batch step of an audit: one model, its methods, one batch in, arrays out.

    The local engine and distributed workers (``engine: ray``) call the same ``run``. Use it inside
    ``session()``, which puts the model in audit mode on its device and restores it after.
    """

    def __init__(self, model: nn.Module, cfg: AuditConfig, *, probe_mean: np.ndarray | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise ModelError(f"the model to audit must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.methods = {name: build(name, mcfg) for name, mcfg in cfg.methods.enabled().items()}
        self.slots = cfg.target_slots()
        self.result_keys = result_keys(list(self.methods), self.slots)
        # Each method's result keys, in target order (what attribute_targets returns).
        self.keys_of = {
            name: [key for key, (owner, _) in self.result_keys.items() if owner == name]
            for name in self.methods
        }
        # audit_mode puts a module model in eval mode for the audit; the report says it did.
        self.model_was_training = not is_exported_graph(model) and any(m.training for m in model.modules())
        self.handle = ModelHandle(
            model,
            self.device,
            cfg.output,
            resolve_autocast(cfg.precision.autocast, self.device),
            output_key=cfg.output_key,
            output_index=cfg.output_index,
        )
        for method in self.methods.values():
            method.check_model(self.handle)  # hooks on an exported graph, layer names, ReLU modules
        self.splitters = {name: _BatchSplitter(name) for name in self.methods}
        self.mask_dtype = np.dtype(cfg.artifacts.mask_dtype)
        self.dtype = _input_dtype(model)
        mean = None if probe_mean is None else torch.from_numpy(probe_mean)
        self.probe_mean = None if mean is None else mean.to(self.device, self.dtype)

    @contextmanager
    def session(self) -> Iterator[BatchAttributor]:
        with audit_mode(self.model), _on_device(self.model, self.device), tf32_mode(self.cfg.precision.tf32):
            yield self

    def preflight(self, probe: ProbeSet) -> None:
        """Check on the first probe sample what would otherwise fail inside a batch: the input
        shape, the model's output, the target classes and each method's needs (gradients, layers,
        window sizes). Call inside ``session()``, before any batch."""
        classes = _check_fits(self.handle, probe, self.dtype)
        _check_targets(self.cfg, probe, classes)
        x = torch.from_numpy(np.array(probe.inputs[:1])).to(self.device, self.dtype)
        for method in self.methods.values():
            method.check_input(self.handle, x)

    def run(
        self,
        start: int,
        inputs: np.ndarray,
        labels: np.ndarray | None,
        ids: np.ndarray,
        progress: AuditProgress | None = None,
    ) -> BatchResult:
        # Random methods and baselines draw per sample from (seed, position in the probe set), so a
        # sample's result depends neither on its batch nor on the worker that ran it.
        context = AttributionContext(
            torch.arange(start, start + len(inputs)),
            probe_mean=self.probe_mean,
            degenerate_floor=self.cfg.checks.completeness.degenerate_floor,
        )
        x = torch.from_numpy(np.ascontiguousarray(inputs)).to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            scores = self.handle.scores(x)
        predicted = scores.argmax(dim=1)
        targets = resolve_targets(self.cfg.target, scores, labels)
        out: dict[str, MethodBatch] = {}
        for name, method in self.methods.items():
            if progress is not None:
                progress.working_on(name)
            started = time.perf_counter()
            results = self.splitters[name].attribute(method, self.handle, x, targets, context)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            # Targets that shared their passes (occlusion) share the time equally.
            seconds = (time.perf_counter() - started) / len(results)
            for key, result in zip(self.keys_of[name], results, strict=True):
                batch = MethodBatch(
                    values=result.values.detach().float().cpu().numpy().astype(self.mask_dtype),
                    seconds=seconds,
                    extras={k: v.detach().cpu().numpy() for k, v in result.extras.items()},
                )
                if method.has_completeness:
                    flat = result.values.detach().reshape(len(x), -1)
                    batch.attribution_sum = flat.double().sum(dim=1).cpu().numpy()
                    batch.output_at_input = result.output_at_input.double().cpu().numpy()
                    batch.output_at_baseline = result.output_at_baseline.double().cpu().numpy()
                out[key] = batch
            if progress is not None:
                progress.advance(name, len(x))
        return BatchResult(start, np.asarray(ids), predicted.cpu().numpy(), targets.cpu().numpy(), out)


class BatchAccumulator:
    """Gathers batch results into per-sample arrays; attributions go to memory-mapped files."""

    def __init__(self, attributor: BatchAttributor, probe: ProbeSet, workdir: Path) -> None:
        n = len(probe)
        self.n = n
        self.ids = probe.ids
        self.seen = np.zeros(n, dtype=bool)
        self.predictions = np.empty(n, dtype=np.int64)
        self.slots = attributor.slots
        self.targets = np.empty((n, len(self.slots)), dtype=np.int64)
        self.result_keys = attributor.result_keys
        self.attributions = {
            key: np.lib.format.open_memmap(
                workdir / f"{key.replace('/', '--')}.npy",
                mode="w+",
                dtype=attributor.mask_dtype,
                shape=(n, *probe.input_shape),
            )
            for key in self.result_keys
        }
        checked = [
            key for key, (name, _) in self.result_keys.items() if attributor.methods[name].has_completeness
        ]
        self.sums = {key: np.full(n, np.nan) for key in checked}
        self.at_input = {key: np.full(n, np.nan) for key in checked}
        self.at_baseline = {key: np.full(n, np.nan) for key in checked}
        self.output_eps = torch.finfo(attributor.dtype).eps  # F(x) and F(x') are in the model's dtype
        self.seconds = dict.fromkeys(self.result_keys, 0.0)
        self.extras: dict[str, dict[str, np.ndarray]] = {key: {} for key in self.result_keys}

    def add(self, result: BatchResult) -> None:
        rows = slice(result.start, result.start + len(result.ids))
        if not np.array_equal(self.ids[rows], result.ids):
            raise RuntimeError(f"batch at {result.start} holds ids that are not the probe set's there")
        if self.seen[rows].any():
            raise RuntimeError(f"batch at {result.start} arrived twice")
        self.seen[rows] = True
        self.predictions[rows] = result.predictions
        self.targets[rows] = result.targets.reshape(len(result.ids), -1)
        for name, m in result.methods.items():
            self.seconds[name] += m.seconds
            self.attributions[name][rows] = m.values
            release_pages(self.attributions[name])  # written pages live on in the file, not in RSS
            for key, value in m.extras.items():
                column = self.extras[name].get(key)
                if column is None:
                    column = self.extras[name][key] = np.zeros(self.n, dtype=value.dtype)
                column[rows] = value
            if name in self.sums:
                self.sums[name][rows] = m.attribution_sum
                self.at_input[name][rows] = m.output_at_input
                self.at_baseline[name][rows] = m.output_at_baseline

    def method_results(self, cfg: AuditConfig) -> dict[str, MethodResult]:
        missing = np.flatnonzero(~self.seen)
        if len(missing):
            raise RuntimeError(
                f"{len(missing)} probe samples were never attributed, e.g. {self.ids[missing[0]]}"
            )
        results = {}
        for name, values in self.attributions.items():
            completeness = None
            if name in self.sums:
                completeness = CompletenessResult.compute(
                    self.sums[name],
                    self.at_input[name],
                    self.at_baseline[name],
                    tolerance=cfg.checks.completeness.tolerance,
                    degenerate_floor=cfg.checks.completeness.degenerate_floor,
                    eps=self.output_eps,
                )
            values.flush()
            method, k = self.result_keys[name]
            results[name] = MethodResult(
                name,
                values,
                self.seconds[name],
                completeness,
                self.extras[name],
                method=method,
                target=self.slots[k] if len(self.slots) > 1 else None,
                targets=self.targets[:, k],
            )
        return results


def audit(
    model: nn.Module,
    probe: ProbeSet | np.ndarray | str | Path | torch.utils.data.Dataset | torch.utils.data.DataLoader,
    config: AuditConfig | str | Path | Mapping[str, Any] | None = None,
    *,
    labels: np.ndarray | None = None,
    feature_names: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
) -> AuditReport:
    """Explain ``model`` on every sample of ``probe`` with the configured methods, then check them.

    ``probe`` is a ``ProbeSet`` (used as it is), or raw data that ``config.probe.preprocess``
    turns into model inputs: a numpy array (with ``labels``), a ``.npy``/``.npz`` file, an image
    folder with one subfolder per class, a torch ``Dataset`` or a ``DataLoader``. ``labels`` and,
    for tabular inputs (N, F), ``feature_names`` go with an array.
    ``config`` is an ``AuditConfig``, a YAML path, a mapping or None (the defaults).
    With ``cache_dir`` every finished batch is kept on disk, keyed by the model's weights, the
    config and the probe set's hash; an audit interrupted and started again with the same cache
    reuses those batches instead of recomputing them.
    """
    cfg = config if isinstance(config, AuditConfig) else load_config(config)
    if not isinstance(model, nn.Module):
        raise ModelError(f"the model to audit must be a torch.nn.Module, got {type(model).__name__}")
    probe = prepare_probe(probe, cfg, labels=labels, feature_names=feature_names)
    probe_sha256 = probe.sha256()
    cache = BatchCache.open(cache_dir, model, cfg, probe_sha256) if cache_dir is not None else None
    return audit_prepared(model, probe, cfg, cache=cache, probe_sha256=probe_sha256)


def audit_prepared(
    model: nn.Module,
    probe: ProbeSet,
    cfg: AuditConfig,
    *,
    cache: BatchCache | None = None,
    probe_sha256: str | None = None,
    progress: bool | None = False,
    preflight: bool = True,
) -> AuditReport:
    """``audit`` on a probe set that ``prepare_probe`` already loaded, preprocessed and sampled.

    Batches found in ``cache`` are reused; every batch computed is added to it. ``progress``
    reports samples x methods on stderr: None (the command line's choice) a bar on a terminal and
    a line every ~10 s elsewhere (a CI log), True a bar, False nothing (the default for a library).
    With ``distributed.engine: ray`` the batches are attributed by Ray actors (``distributed``).
    """
    if cfg.distributed is not None and cfg.distributed.engine == "ray":
        from mlflow_xai.distributed import audit_on_ray

        return audit_on_ray(model, probe, cfg, cache=cache, probe_sha256=probe_sha256)
    probe_mean = _probe_mean(probe) if _needs_probe_mean(cfg.model_dump()) else None
    attributor = BatchAttributor(model, cfg, probe_mean=probe_mean)
    probe_sha256 = probe_sha256 or probe.sha256()

    # Attributions stream to memory-mapped files, so memory does not grow with the probe set.
    workdir = Path(tempfile.mkdtemp(prefix="mlflow-xai-attr-"))
    try:
        gathered = BatchAccumulator(attributor, probe, workdir)
        mode = {None: "auto", True: "bar", False: "off"}[progress]
        with attributor.session(), AuditProgress(len(probe), list(attributor.methods), mode=mode) as shown:
            if preflight:  # the command line has run check_audit_inputs before opening its run
                attributor.preflight(probe)
            for batch in probe.batches(cfg.batch_size):
                result = cache.get(batch.start) if cache is not None else None
                if result is None:
                    result = attributor.run(batch.start, batch.inputs, batch.labels, batch.ids, shown)
                    if cache is not None:
                        cache.put(result)
                else:
                    for name in attributor.methods:
                        shown.advance(name, len(batch.ids))
                gathered.add(result)
        return finish_report(cfg, probe, probe_sha256, gathered, attributor, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)  # an interrupted audit leaves no attribution files
        raise


def prepare_probe(
    probe: Any,
    cfg: AuditConfig,
    *,
    labels: np.ndarray | None = None,
    feature_names: Sequence[str] | None = None,
) -> ProbeSet:
    """Load, preprocess and sample the probe set as ``cfg`` says, and check it fits the target."""
    first_only = cfg.max_samples if cfg.probe.sampling == "first" else None
    probe = load_probe(probe, cfg.probe, labels=labels, feature_names=feature_names, limit=first_only)
    if cfg.max_samples is not None:
        probe = probe.sample(cfg.max_samples, cfg.probe.sampling, seed=cfg.seed)
    wants_label = "label" in target_entries(cfg.target)
    if wants_label and probe.labels is None:
        raise ProbeError("target 'label' needs probe labels, but the probe set has none")
    display = cfg.artifacts.display
    if isinstance(display, dict) and len(probe.input_shape) == 3:
        check_display_channels(display["mean"], probe.input_shape[0], "artifacts.display")
    if wants_label and probe.label_source == FOLDER_ORDER:
        shown = ", ".join(f"{name}={label}" for label, name in sorted((probe.class_names or {}).items())[:5])
        raise ConfigError(
            "target 'label' explains each sample's label, but the probe is an image folder read without "
            f"probe.class_index, so its labels are the folders' positions in sorted order ({shown}), not "
            "known to be the model's classes; give probe.class_index (e.g. {cat: 281, dog: 207}, or "
            "{cat: 0, dog: 1} for a model trained on this very folder layout), or use target: predicted "
            "or a class index"
        )
    return probe


def finish_report(
    cfg: AuditConfig,
    probe: ProbeSet,
    probe_sha256: str,
    gathered: BatchAccumulator,
    attributor: BatchAttributor,
    workdir: Path,
) -> AuditReport:
    """The report of gathered batches, with IG's path figures computed on this process's model.

    The attribution files in ``workdir`` live as long as the report that reads them.
    """
    with attributor.session():
        ig_profiles = _ig_profiles(
            attributor.methods,
            attributor.probe_mean,
            attributor.handle,
            probe,
            gathered.targets[:, 0],
            attributor.dtype,
            cfg.artifacts.sheet_samples,
            cfg.checks.completeness.degenerate_floor,
        )
    report = build_report(cfg, probe, probe_sha256, gathered, attributor, ig_profiles)
    weakref.finalize(report, shutil.rmtree, workdir, ignore_errors=True)
    return report


def build_report(
    cfg: AuditConfig,
    probe: ProbeSet,
    probe_sha256: str,
    gathered: BatchAccumulator,
    attributor: BatchAttributor,
    ig_profiles: IGPathProfiles | None,
) -> AuditReport:
    dtype = str(attributor.dtype).removeprefix("torch.")
    return AuditReport(
        config=cfg,
        probe=probe,
        probe_sha256=probe_sha256,
        predictions=gathered.predictions,
        targets=gathered.targets[:, 0],
        methods=gathered.method_results(cfg),
        device=str(attributor.device),
        exported_model=attributor.handle.exported,
        ig_profiles=ig_profiles,
        compute_dtype=dtype,
        seed=cfg.seed,
        dtype=dtype,
        autocast=cfg.precision.autocast,
        tf32=cfg.precision.tf32,
        oom_splits={name: s.splits for name, s in attributor.splitters.items() if s.splits},
        model_was_training=attributor.model_was_training,
    )


def default_cache_dir() -> Path:
    """Where the command line keeps resume caches: the user cache directory (platformdirs), e.g.
    ``~/.cache/mlflow-xai/batches`` or ``$XDG_CACHE_HOME/mlflow-xai/batches``, never the working
    directory a CI job checks out."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("mlflow-xai")) / "batches"


class BatchCache:
    """Finished batches on disk, in a folder named by what determines them (model, config, probe)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @staticmethod
    def prune(root: str | Path, *, max_age_days: float) -> list[Path]:
        """Remove the cache folders under ``root`` that nothing has written for ``max_age_days``:
        a failed audit whose config then changed is never resumed. Returns what was removed."""
        root = Path(root)
        if not root.is_dir():
            return []
        cutoff = time.time() - max_age_days * 86400
        removed = []
        for folder in root.iterdir():
            # Only the folders BatchCache.open names (24 hex digits): --cache-dir may be shared.
            if not re.fullmatch(r"[0-9a-f]{24}", folder.name) or not folder.is_dir():
                continue
            try:
                times = [f.stat().st_mtime for f in folder.iterdir()] or [folder.stat().st_mtime]
            except FileNotFoundError:  # a concurrent audit finished and removed it
                continue
            if max(times) < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    @classmethod
    def open(cls, root: str | Path, model: nn.Module, cfg: AuditConfig, probe_sha256: str) -> BatchCache:
        digest = hashlib.sha256()
        digest.update(model_fingerprint(model).encode())
        digest.update(dump_config(cfg).encode())
        digest.update(probe_sha256.encode())
        folder = Path(root) / digest.hexdigest()[:24]
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder)

    def _path(self, start: int) -> Path:
        return self.folder / f"batch-{start:09d}.npz"

    def get(self, start: int) -> BatchResult | None:
        path = self._path(start)
        return BatchResult.load(path) if path.is_file() else None

    def put(self, result: BatchResult) -> None:
        # A concurrent identical audit that finished may remove the (then empty) folder at any
        # moment; make it again and retry.
        for attempt in range(5):
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                result.save(self._path(result.start))
                return
            except (FileNotFoundError, FileExistsError):  # removed between the check and the write
                if attempt == 4:
                    raise

    def __len__(self) -> int:
        return len(list(self.folder.glob("batch-*.npz")))

    def clear(self) -> None:
        """Forget every cached batch (a fresh audit), keeping the folder."""
        for path in self.folder.glob("batch-*.npz"):
            path.unlink(missing_ok=True)  # a concurrent identical audit may clear it too

    def remove(self) -> None:
        """Delete the cache folder (the audit finished and needs no resuming)."""
        self.clear()
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            try:
                self.folder.rmdir()
            except OSError:  # a concurrent identical audit wrote into it meanwhile: leave it
                pass


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's class, parameter and buffer names, shapes and values."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class _BatchSplitter:
    """Runs one method on a batch; on CUDA out-of-memory it halves the pieces and retries.

    The smaller size sticks for the rest of the audit, so the next batches do not fail first.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.limit: int | None = None  # largest piece known to fit; None until memory runs out
        self.splits = 0

    def attribute(
        self,
        method: Any,
        handle: ModelHandle,
        x: torch.Tensor,
        targets: torch.Tensor,
        context: AttributionContext,
    ) -> list[Attribution]:
        """One Attribution per column of ``targets`` (B, K)."""
        pieces: list[list[Attribution]] = []
        start, n = 0, len(x)
        while start < n:
            size = n - start if self.limit is None else min(self.limit, n - start)
            rows = slice(start, start + size)
            try:
                piece = method.attribute_targets(
                    handle, x[rows], targets[rows], context.rows(start, start + size)
                )
                pieces.append(piece)
            except torch.cuda.OutOfMemoryError as exc:
                if size == 1:
                    raise ModelError(
                        f"method {self.name!r} ran out of device memory on a single sample; lower its "
                        "internal_batch_size (or perturbations_per_eval), or audit on the CPU"
                    ) from exc
                del exc  # its traceback holds the failed pass's tensors
                if handle.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.limit = (size + 1) // 2
                self.splits += 1
                continue
            start += size
        return [concat_attributions([piece[k] for piece in pieces]) for k in range(targets.shape[1])]


@contextmanager
def _on_device(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Move the model to ``device`` for the audit and back to where it was after."""
    params = list(model.parameters())
    original = params[0].device if params else device
    if original != device:
        model.to(device)
    try:
        yield
    finally:
        if original != device:
            model.to(original)


def _input_dtype(model: nn.Module) -> torch.dtype:
    """Inputs follow the model's floating-point parameters (float64 models get float64 paths)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def check_audit_inputs(model: nn.Module, probe: ProbeSet, cfg: AuditConfig) -> None:
    """Every check ``audit_prepared`` makes before its first batch, on its own: the CLI calls it
    before it opens a run, so bad input logs nothing."""
    attributor = BatchAttributor(model, cfg)
    with attributor.session():
        attributor.preflight(probe)


_REEXPORT = (
    "call model.eval() before mlflow.pytorch.log_model and give an input_example of 2 or more rows "
    '(the batch dimension is then dynamic), or log it with serialization_format="pickle"'
)


def _check_fits(handle: ModelHandle, probe: ProbeSet, dtype: torch.dtype) -> int:
    """Run the first samples through the model before any compute: a shape mismatch, a graph
    exported with a static batch of 1, a graph exported in training mode and an output that is
    random (two passes over the same batch disagree) each fail here, before a run is opened.

    Returns the number of classes the model scores."""
    x = torch.from_numpy(np.array(probe.inputs[:2])).to(handle.device, dtype)
    x = x.expand(2, *x.shape[1:]) if len(x) == 1 else x  # methods batch many points even for one sample
    try:
        with torch.no_grad():
            classes = int(handle.scores(x[:1]).shape[1])
    except ModelError:
        raise
    except Exception as exc:  # the model's own error says best what it expected
        raise ProbeError(
            f"the model cannot take probe inputs of shape {list(probe.input_shape)} "
            f"(per sample): {type(exc).__name__}: {exc}"
        ) from None
    training_ops = training_mode_ops(handle.module)
    if training_ops:
        raise ModelError(
            "the model is a graph exported in training mode (MLflow's default pt2 format): it runs "
            f"{', '.join(training_ops)} with training=True, so its outputs depend on the batch or on "
            "chance, and an exported graph cannot be switched to eval mode; its attributions would "
            f"not be the deployed model's. Re-log it: {_REEXPORT}"
        )
    try:
        with torch.no_grad():
            first, second = handle.scores(x), handle.scores(x)
    except ModelError:
        raise
    except Exception as exc:
        if handle.exported:
            raise ModelError(
                "the model is a graph exported with a static batch of 1 (MLflow's default pt2 format, "
                "logged with a one-row input_example): a pass over 2 samples fails "
                f"({type(exc).__name__}: {_first_line(exc)}), and an audit evaluates many inputs per "
                f"pass. Re-log it: {_REEXPORT}"
            ) from None
        raise ProbeError(
            f"the model takes one input but not a batch of 2: {type(exc).__name__}: {exc}"
        ) from None
    # Dropout changes outputs by their own size; a GPU's non-deterministic kernels by far less.
    if float((first - second).abs().max()) > 1e-4 * max(float(first.abs().max()), 1e-12):
        raise ModelError(
            "the model's output is random: two passes over the same 2 inputs disagree (by up "
            f"to {float((first - second).abs().max()):.3g}), so no attribution of it can be repeated. "
            "Dropout or noise left on in forward()? Put the model in eval mode before logging it"
        )
    return classes


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _check_targets(cfg: AuditConfig, probe: ProbeSet, classes: int) -> None:
    """Every fixed target, ``top: k``, every class name and every probe label must fit the model's
    classes, whatever the target: labels also score the accuracy, and a 1-based label would be
    scored as the wrong class."""
    allowed = f"the model has {classes} classes, so a class must be 0 to {classes - 1}"
    spec = cfg.target
    for entry in target_entries(spec):
        if type(entry) is int and entry >= classes:
            raise ProbeError(f"target class {entry} is out of range: {allowed}")
    if isinstance(spec, TopTargets) and spec.top > classes:
        raise ProbeError(f"target top: {spec.top} asks for more classes than the model has ({classes})")
    if cfg.class_names is not None and max(cfg.class_names) >= classes:
        raise ProbeError(
            f"class_names names class {max(cfg.class_names)}, but {allowed}; give the names of this "
            "model's classes"
        )
    if probe.labels is not None:
        bad = np.flatnonzero((probe.labels < 0) | (probe.labels >= classes))
        if len(bad):
            first = bad[0]
            raise ProbeError(
                f"label {int(probe.labels[first])} of probe sample {str(probe.ids[first])!r} is out of "
                f"range: {allowed} ({len(bad)} such label(s)); labels are class indices of the model, "
                "counted from 0"
            )


def resolve_targets(
    spec: Any,
    scores: torch.Tensor,
    labels: np.ndarray | None,
) -> torch.Tensor:
    """The class each sample is explained for, per target slot: (B, K) int64 on the scores' device.

    ``top: k`` takes the k highest scores in order (ties by the lower class index, as ``argmax``
    takes the first), so ``top1`` is the predicted class."""
    num_classes, device = scores.shape[1], scores.device
    if isinstance(spec, TopTargets):
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        return order[:, : spec.top]
    columns = []
    for entry in target_entries(spec):
        if entry == "predicted":
            columns.append(scores.argmax(dim=1))
        elif entry == "label":
            columns.append(torch.from_numpy(np.asarray(labels)).to(device=device, dtype=torch.int64))
        else:
            columns.append(torch.full((len(scores),), int(entry), dtype=torch.int64, device=device))
    target = torch.stack(columns, dim=1)
    if int(target.min()) < 0 or int(target.max()) >= num_classes:
        bad = int(target.max()) if int(target.max()) >= num_classes else int(target.min())
        raise ProbeError(
            f"target class {bad} is out of range: the model has {num_classes} classes, so a target "
            f"must be 0 to {num_classes - 1}"
        )
    return target


def _needs_probe_mean(tree: Any) -> bool:
    if isinstance(tree, dict):
        return tree.get("kind") == "probe_mean" or any(_needs_probe_mean(v) for v in tree.values())
    return False


def _probe_mean(probe: ProbeSet, chunk: int = 1024) -> np.ndarray:
    """The mean input of the probe set, accumulated in float64 chunk by chunk."""
    total = np.zeros(probe.input_shape, dtype=np.float64)
    for start in range(0, len(probe), chunk):
        total += probe.inputs[start : start + chunk].sum(axis=0, dtype=np.float64)
        release_pages(probe.inputs)
    return total / len(probe)  # float64: make_baseline casts it to the model's input dtype


def _ig_profiles(
    methods: dict[str, Any],
    probe_mean: torch.Tensor | None,
    handle: ModelHandle,
    probe: ProbeSet,
    targets: np.ndarray,
    dtype: torch.dtype,
    count: int,
    degenerate_floor: float,
) -> IGPathProfiles | None:
    """F and |dF/dx| along the path, and completeness against steps, for the first few samples.

    That is 33 gradient evaluations per sample, for at most 4 samples, in passes of IG's own
    ``internal_batch_size`` (the memory IG itself needs); their time is reported as
    ``xai/integrated_gradients/figures_seconds``, apart from the method's."""
    ig = methods.get("integrated_gradients")
    count = min(count, 4, len(probe))
    if ig is None or count == 0:
        return None
    started = time.perf_counter()
    x = torch.from_numpy(np.array(probe.inputs[:count])).to(handle.device, dtype)
    baseline = make_baseline(ig.config.baseline, x, probe_mean=probe_mean, positions=torch.arange(count))
    target = torch.from_numpy(targets[:count]).to(handle.device)
    profiles = ig_path_profiles(
        handle.explained,
        x,
        baseline,
        target,
        ids=probe.ids[:count].tolist(),
        max_steps=IG_FIGURE_STEPS,
        internal_batch_size=ig.config.points_per_pass(x[0].numel()),
        degenerate_floor=degenerate_floor,
    )
    return dataclasses.replace(profiles, seconds=time.perf_counter() - started)


#: Nodes of the finest grid the IG figures evaluate (2^5 + 1): completeness at 3, 5, 9, 17 and 33
#: steps, as far as IG's default of 32 steps. On resnet18 (64 px, 2 samples) 129 nodes cost 2.6 times
#: the IG attributions themselves at 50 steps; 33 nodes cost 0.66 times.
IG_FIGURE_STEPS = 33
