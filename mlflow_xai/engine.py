"""The audit engine: probe set x methods -> attributions -> checks -> an AuditReport.

Nothing here touches MLflow; the engine runs and is tested without a tracking server.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from mlflow_xai.baselines import make_baseline
from mlflow_xai.checks import CompletenessResult
from mlflow_xai.config import AuditConfig, load_config
from mlflow_xai.errors import ModelError, ProbeError
from mlflow_xai.ig_plots import IGPathProfiles, ig_path_profiles
from mlflow_xai.loaders import load_probe
from mlflow_xai.methods import build
from mlflow_xai.methods.base import Attribution
from mlflow_xai.model import ModelHandle, audit_mode, resolve_autocast, resolve_device, tf32_mode
from mlflow_xai.probe import ProbeSet, release_pages
from mlflow_xai.report import AuditReport, MethodResult


def audit(
    model: nn.Module,
    probe: ProbeSet | np.ndarray | str | Path | torch.utils.data.Dataset | torch.utils.data.DataLoader,
    config: AuditConfig | str | Path | Mapping[str, Any] | None = None,
    *,
    labels: np.ndarray | None = None,
    feature_names: Sequence[str] | None = None,
) -> AuditReport:
    """Explain ``model`` on every sample of ``probe`` with the configured methods, then check them.

    ``probe`` is a ``ProbeSet`` (used as it is), or raw data that ``config.probe.preprocess``
    turns into model inputs: a numpy array (with ``labels``), a ``.npy``/``.npz`` file, an image
    folder with one subfolder per class, a torch ``Dataset`` or a ``DataLoader``. ``labels`` and,
    for tabular inputs (N, F), ``feature_names`` go with an array.
    ``config`` is an ``AuditConfig``, a YAML path, a mapping or None (the defaults).
    """
    cfg = config if isinstance(config, AuditConfig) else load_config(config)
    if not isinstance(model, nn.Module):
        raise ModelError(f"the model to audit must be a torch.nn.Module, got {type(model).__name__}")
    first_only = cfg.max_samples if cfg.probe.sampling == "first" else None
    probe = load_probe(probe, cfg.probe, labels=labels, feature_names=feature_names, limit=first_only)
    if cfg.max_samples is not None:
        probe = probe.sample(cfg.max_samples, cfg.probe.sampling, seed=cfg.seed)
    if cfg.target == "label" and probe.labels is None:
        raise ProbeError("target 'label' needs probe labels, but the probe set has none")

    device = resolve_device(cfg.device)
    methods = {name: build(name, mcfg) for name, mcfg in cfg.methods.enabled().items()}
    handle = ModelHandle(model, device, cfg.output, resolve_autocast(cfg.precision.autocast, device))
    for method in methods.values():
        if method.needs_hooks and handle.exported:
            method.attribute(handle, torch.empty(0), torch.empty(0))  # raises the refusal message

    torch.manual_seed(cfg.seed)
    if _needs_probe_mean(cfg.model_dump()):
        mean = torch.from_numpy(_probe_mean(probe)).to(device)
        for method in methods.values():
            target_obj = getattr(method, "inner", method)  # noise_tunnel reads its inner method's
            target_obj.probe_mean = mean
    n = len(probe)
    mask_dtype = np.dtype(cfg.artifacts.mask_dtype)
    predictions = np.empty(n, dtype=np.int64)
    targets = np.empty(n, dtype=np.int64)
    # Attributions stream to memory-mapped files, so memory does not grow with the probe set.
    workdir = Path(tempfile.mkdtemp(prefix="mlflow-xai-attr-"))
    try:
        attributions = {
            name: np.lib.format.open_memmap(
                workdir / f"{name}.npy", mode="w+", dtype=mask_dtype, shape=(n, *probe.input_shape)
            )
            for name in methods
        }
        at_input = {name: np.full(n, np.nan) for name, m in methods.items() if m.has_completeness}
        at_baseline = {name: np.full(n, np.nan) for name in at_input}
        attribution_sum = {name: np.full(n, np.nan) for name in at_input}
        seconds = dict.fromkeys(methods, 0.0)
        extras: dict[str, dict[str, np.ndarray]] = {name: {} for name in methods}

        splitters = {name: _BatchSplitter(name) for name in methods}
        with audit_mode(model), _on_device(model, device), tf32_mode(cfg.precision.tf32):
            dtype = _input_dtype(model)
            _check_fits(handle, probe, dtype)
            for batch in probe.batches(cfg.batch_size):
                x = torch.from_numpy(batch.inputs).to(device=device, dtype=dtype)
                rows = slice(batch.start, batch.start + len(x))
                with torch.no_grad():
                    scores = handle.scores(x)
                predicted = scores.argmax(dim=1)
                target = _resolve_target(cfg.target, predicted, batch.labels, scores.shape[1], device)
                predictions[rows] = predicted.cpu().numpy()
                targets[rows] = target.cpu().numpy()
                for name, method in methods.items():
                    started = time.perf_counter()
                    result = splitters[name].attribute(method, handle, x, target)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    seconds[name] += time.perf_counter() - started
                    attributions[name][rows] = result.values.float().cpu().numpy()
                    release_pages(attributions[name])  # written pages live on in the file, not in RSS
                    for key, value in result.extras.items():
                        column = extras[name].get(key)
                        if column is None:
                            column = extras[name][key] = np.zeros(n, dtype=value.cpu().numpy().dtype)
                        column[rows] = value.detach().cpu().numpy()
                    if name in at_input:
                        flat = result.values.detach().reshape(len(x), -1)
                        attribution_sum[name][rows] = flat.double().sum(dim=1).cpu().numpy()
                        at_input[name][rows] = result.output_at_input.double().cpu().numpy()
                        at_baseline[name][rows] = result.output_at_baseline.double().cpu().numpy()
            ig_profiles = _ig_profiles(methods, handle, probe, targets, dtype, cfg.artifacts.sheet_samples)

        completeness_cfg = cfg.checks.completeness
        results = {}
        for name in methods:
            completeness = None
            if name in at_input:
                completeness = CompletenessResult.compute(
                    attribution_sum[name],
                    at_input[name],
                    at_baseline[name],
                    tolerance=completeness_cfg.tolerance,
                    degenerate_floor=completeness_cfg.degenerate_floor,
                )
            results[name] = MethodResult(name, attributions[name], seconds[name], completeness, extras[name])
        for array in attributions.values():
            array.flush()
        report = AuditReport(
            config=cfg,
            probe=probe,
            probe_sha256=probe.sha256(),
            predictions=predictions,
            targets=targets,
            methods=results,
            device=str(device),
            exported_model=handle.exported,
            ig_profiles=ig_profiles,
            compute_dtype=str(dtype).removeprefix("torch."),
            seed=cfg.seed,
            dtype=str(dtype).removeprefix("torch."),
            autocast=cfg.precision.autocast,
            tf32=cfg.precision.tf32,
            oom_splits={name: s.splits for name, s in splitters.items() if s.splits},
        )
        # The files live as long as the report that reads them.
        weakref.finalize(report, shutil.rmtree, workdir, ignore_errors=True)
        return report
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)  # an interrupted audit leaves nothing behind
        raise


class _BatchSplitter:
    """Runs one method on a batch; on CUDA out-of-memory it halves the pieces and retries.

    The smaller size sticks for the rest of the audit, so the next batches do not fail first.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.limit: int | None = None  # largest piece known to fit; None until memory runs out
        self.splits = 0

    def attribute(
        self, method: Any, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor
    ) -> Attribution:
        pieces: list[Attribution] = []
        start, n = 0, len(x)
        while start < n:
            size = n - start if self.limit is None else min(self.limit, n - start)
            try:
                pieces.append(method.attribute(handle, x[start : start + size], target[start : start + size]))
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
        return pieces[0] if len(pieces) == 1 else _concat(pieces)


def _concat(pieces: list[Attribution]) -> Attribution:
    def cat(values: list[torch.Tensor | None]) -> torch.Tensor | None:
        return None if values[0] is None else torch.cat(values)  # type: ignore[arg-type]

    return Attribution(
        values=torch.cat([p.values for p in pieces]),
        output_at_input=cat([p.output_at_input for p in pieces]),
        output_at_baseline=cat([p.output_at_baseline for p in pieces]),
        extras={key: torch.cat([p.extras[key] for p in pieces]) for key in pieces[0].extras},
    )


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


def _check_fits(handle: ModelHandle, probe: ProbeSet, dtype: torch.dtype) -> None:
    """Run one sample through the model first, so a shape mismatch fails before any compute."""
    x = torch.from_numpy(np.array(probe.inputs[:1])).to(handle.device, dtype)
    try:
        with torch.no_grad():
            handle.scores(x)
    except ModelError:
        raise
    except Exception as exc:  # the model's own error says best what it expected
        raise ProbeError(
            f"the model cannot take probe inputs of shape {list(probe.input_shape)} "
            f"(per sample): {type(exc).__name__}: {exc}"
        ) from None


def _resolve_target(
    spec: str | int,
    predicted: torch.Tensor,
    labels: np.ndarray | None,
    num_classes: int,
    device: torch.device,
) -> torch.Tensor:
    if spec == "predicted":
        return predicted
    if spec == "label":
        target = torch.from_numpy(labels).to(device)
    else:
        target = torch.full_like(predicted, int(spec))
    if int(target.min()) < 0 or int(target.max()) >= num_classes:
        bad = int(target.max()) if int(target.max()) >= num_classes else int(target.min())
        raise ProbeError(f"target class {bad} is out of range: the model has {num_classes} classes")
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
    return (total / len(probe)).astype(np.float32)


def _ig_profiles(
    methods: dict[str, Any],
    handle: ModelHandle,
    probe: ProbeSet,
    targets: np.ndarray,
    dtype: torch.dtype,
    count: int,
) -> IGPathProfiles | None:
    """F and |dF/dx| along the path, and completeness against steps, for the first few samples."""
    ig = methods.get("integrated_gradients")
    count = min(count, 4, len(probe))
    if ig is None or count == 0:
        return None
    x = torch.from_numpy(np.array(probe.inputs[:count])).to(handle.device, dtype)
    baseline = make_baseline(ig.config.baseline, x, probe_mean=ig.probe_mean)
    target = torch.from_numpy(targets[:count]).to(handle.device)
    return ig_path_profiles(
        handle.explained, x, baseline, target, ids=probe.ids[:count].tolist(), max_steps=257
    )
