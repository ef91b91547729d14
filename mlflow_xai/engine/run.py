"""The audit engine: probe set x methods -> attributions -> checks -> an AuditReport.

Nothing here touches MLflow; the engine runs and is tested without a tracking server.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from mlflow_xai.attribution.baselines import make_baseline
from mlflow_xai.attribution.path_profiles import IGPathProfiles, ig_path_profiles
from mlflow_xai.config.audit_config import AuditConfig
from mlflow_xai.config.loading import load_config, shifted_seeds
from mlflow_xai.config.sections import check_display_channels
from mlflow_xai.config.targets import target_entries
from mlflow_xai.engine.accumulate import BatchAccumulator
from mlflow_xai.engine.batch import BatchAttributor
from mlflow_xai.engine.cache import BatchCache
from mlflow_xai.engine.executors import Executor, executor_for
from mlflow_xai.engine.progress import AuditProgress
from mlflow_xai.errors import ConfigError, ModelError, ProbeError
from mlflow_xai.model.handle import ModelHandle
from mlflow_xai.probe.loaders import load_probe
from mlflow_xai.probe.memory import release_pages
from mlflow_xai.probe.probe_set import FOLDER_ORDER, ProbeSet
from mlflow_xai.report.audit_report import AuditReport
from mlflow_xai.report.seed_noise import metric_spread


def audit(
    model: nn.Module,
    probe: ProbeSet | np.ndarray | str | Path | torch.utils.data.Dataset | torch.utils.data.DataLoader,
    config: AuditConfig | str | Path | Mapping[str, Any] | None = None,
    *,
    labels: np.ndarray | None = None,
    feature_names: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    tokenizer: Any = None,
) -> AuditReport:
    """Explain ``model`` on every sample of ``probe`` with the configured methods, then check them.

    ``probe`` is a ``ProbeSet`` (used as it is), or raw data that ``config.probe.preprocess``
    turns into model inputs: a numpy array (with ``labels``), a ``.npy``/``.npz`` file, an image
    folder with one subfolder per class, a torch ``Dataset`` or a ``DataLoader``. ``labels`` and,
    for tabular inputs (N, F), ``feature_names`` go with an array.
    ``config`` is an ``AuditConfig``, a YAML path, a mapping or None (the defaults).
    With ``cache_dir`` every finished batch is kept on disk, keyed by the model's weights, the
    config and the probe set's hash; an audit interrupted and started again with the same cache
    reuses those batches instead of recomputing them. Token ids (N, L) are a text probe; raw texts
    (an ``.npz`` with ``texts``) are tokenized by ``probe.tokenizer`` or by ``tokenizer``.
    """
    cfg = config if isinstance(config, AuditConfig) else load_config(config)
    if not isinstance(model, nn.Module):
        raise ModelError(f"the model to audit must be a torch.nn.Module, got {type(model).__name__}")
    probe = prepare_probe(probe, cfg, labels=labels, feature_names=feature_names, tokenizer=tokenizer)
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
    executor: Executor | None = None,
) -> AuditReport:
    """``audit`` on a probe set that ``prepare_probe`` already loaded, preprocessed and sampled.

    Batches found in ``cache`` are reused; every batch computed is added to it. ``progress``
    reports samples x methods on stderr: None (the command line's choice) a bar on a terminal and
    a line every ~10 s elsewhere (a CI log), True a bar, False nothing (the default for a library).
    ``executor`` attributes the batches; by default the one ``distributed.engine`` names (with
    ``ray``, a pool of Ray actors: ``mlflow_xai.distributed``). With ``gate.seed_runs`` > 1 the
    audit runs again with every seed shifted, and ``report.seed_spread`` holds each metric's spread.
    """
    executor = executor_for(cfg) if executor is None else executor
    probe_mean = _probe_mean(probe) if _needs_probe_mean(cfg.model_dump()) else None
    # Validates the model and the methods here (a text probe: its embedding layer and token ids too).
    attributor = BatchAttributor(
        model,
        cfg,
        probe_mean=probe_mean,
        attention_mask=probe.attention_mask,
        token_ids=probe.token_ids,
        token_type_ids=probe.token_type_ids,
    )
    probe_sha256 = probe_sha256 or probe.sha256()
    batch_size = executor.batch_size(cfg)

    # Attributions stream to memory-mapped files, so memory does not grow with the probe set.
    workdir = Path(tempfile.mkdtemp(prefix="mlflow-xai-attr-"))
    try:
        gathered = BatchAccumulator(attributor, probe, workdir)
        mode = {None: "auto", True: "bar", False: "off"}[progress]
        with attributor.session(), AuditProgress(len(probe), list(attributor.methods), mode=mode) as shown:
            if preflight:  # the command line has run check_audit_inputs before opening its run
                attributor.preflight(probe)
            todo = []
            for start in range(0, len(probe), batch_size):
                cached = cache.get(start) if cache is not None else None
                if cached is None:
                    todo.append(start)
                    continue
                gathered.add(cached)
                for name in attributor.methods:
                    shown.advance(name, len(cached.ids))
            for result in executor.run(attributor, probe, todo, batch_size, shown) if todo else ():
                gathered.add(result)
                if cache is not None:
                    cache.put(result)
        report = finish_report(cfg, probe, probe_sha256, gathered, attributor, workdir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)  # an interrupted audit leaves no attribution files
        raise
    if cfg.gate.seed_runs > 1:
        runs = [report.metrics()]
        for shift in range(1, cfg.gate.seed_runs):
            other = audit_prepared(
                model,
                probe,
                shifted_seeds(cfg, shift),
                probe_sha256=probe_sha256,
                progress=False,
                preflight=False,
                executor=executor,
            )
            runs.append(other.metrics())
        report.seed_spread = metric_spread(runs)
    return report


def prepare_probe(
    probe: Any,
    cfg: AuditConfig,
    *,
    labels: np.ndarray | None = None,
    feature_names: Sequence[str] | None = None,
    tokenizer: Any = None,
) -> ProbeSet:
    """Load, preprocess and sample the probe set as ``cfg`` says, and check it fits the target.
    ``tokenizer`` tokenizes raw texts when ``probe.tokenizer`` names none."""
    first_only = cfg.max_samples if cfg.probe.sampling == "first" else None
    probe = load_probe(
        probe, cfg.probe, labels=labels, feature_names=feature_names, limit=first_only, tokenizer=tokenizer
    )
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


#: Image probes: the first samples whose maps the report shows at every stage of the randomisation check.
CASCADE_SAMPLES = 3


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
        randomisation_maps = {}
        shown = min(CASCADE_SAMPLES, cfg.artifacts.sheet_samples, len(probe))
        if cfg.checks.randomisation is not None and len(probe.input_shape) == 3 and shown:
            randomisation_maps = attributor.cascade_maps(probe.inputs[:shown], gathered.targets[:shown])
    report = build_report(cfg, probe, probe_sha256, gathered, attributor, ig_profiles)
    report.randomisation_maps = randomisation_maps
    if attributor.text is not None:
        special = np.asarray(attributor.text.special_ids, dtype=np.int64)
        report.token_kept = np.isin(probe.inputs, special) | (probe.attention_mask == 0)
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
        seed=cfg.seed,
        dtype=dtype,
        autocast=cfg.precision.autocast,
        tf32=cfg.precision.tf32,
        oom_splits={name: s.splits for name, s in attributor.splitters.items() if s.splits},
        model_was_training=attributor.model_was_training,
        randomisation_layers=attributor.randomisation_layers(),
    )


def check_audit_inputs(model: nn.Module, probe: ProbeSet, cfg: AuditConfig) -> None:
    """Every check ``audit_prepared`` makes before its first batch, on its own: the CLI calls it
    before it opens a run, so bad input logs nothing."""
    attributor = BatchAttributor(
        model,
        cfg,
        attention_mask=probe.attention_mask,
        token_ids=probe.token_ids,
        token_type_ids=probe.token_type_ids,
    )
    with attributor.session():
        attributor.preflight(probe)


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
