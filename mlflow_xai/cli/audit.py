"""``mlflow-xai audit``: everything checked before a run is opened, then the audit, the gate and
the logging inside one MLflow run; finished batches are kept for ``--resume`` until it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_xai.cli.console import finish, one_line

STALE_CACHE_DAYS = 7  # a resume cache older than this is another config's leftover: removed


def _load_pytorch_model(uri: str) -> tuple[Any, Any]:
    """The PyTorch module logged at ``uri`` and, for a model logged with mlflow.transformers, its
    tokenizer (else None)."""
    import mlflow

    from mlflow_xai.errors import ModelError

    try:
        flavors = sorted(mlflow.models.get_model_info(uri).flavors)
    except Exception as exc:
        raise ModelError(f"cannot load model {uri!r}: {one_line(exc)}") from None
    if "transformers" in flavors and "pytorch" not in flavors:
        return _load_transformers_model(uri)
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        raise ModelError(f"cannot load model {uri!r}: {one_line(exc)}") from None
    if "pytorch" not in flavors:
        raise ModelError(
            f"model {uri!r} is not a PyTorch model (its flavors: {', '.join(flavors)}); "
            "mlflow-xai audits models logged with mlflow.pytorch.log_model or, for text, "
            "mlflow.transformers.log_model"
        )
    return pyfunc.get_raw_model(), None


def _load_transformers_model(uri: str) -> tuple[Any, Any]:
    """A model logged with mlflow.transformers: its PyTorch model and its tokenizer."""
    import mlflow

    from mlflow_xai.errors import ConfigError, ModelError

    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"model {uri!r} was logged with mlflow.transformers; auditing it needs the transformers "
            "package: pip install 'mlflow-xai[text]'"
        ) from None
    try:
        components = mlflow.transformers.load_model(uri, return_type="components")
    except Exception as exc:
        raise ModelError(f"cannot load model {uri!r}: {one_line(exc)}") from None
    import torch.nn as nn

    model = components.get("model")
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model {uri!r} was logged with mlflow.transformers around a {type(model).__name__}, not a "
            "PyTorch model; mlflow-xai audits PyTorch models"
        )
    return model.eval(), components.get("tokenizer")


def run_audit(args: argparse.Namespace) -> int:
    import mlflow

    from mlflow_xai.ci.gate import check_gate_config
    from mlflow_xai.config.loading import load_config
    from mlflow_xai.engine.cache import BatchCache, default_cache_dir
    from mlflow_xai.engine.run import check_audit_inputs, prepare_probe
    from mlflow_xai.probe.text import holds_raw_texts

    # Config, probe set, models and gate are checked before any compute and before anything is
    # logged: bad input exits 2 and leaves no run behind.
    config = load_config(
        args.config,
        **({"device": args.device} if args.device else {}),
        **({"distributed": {"engine": args.engine}} if args.engine else {}),
    )
    quiet_ray: Any = contextlib.nullcontext()
    if config.distributed is not None and config.distributed.engine == "ray":
        from mlflow_xai.distributed.ray import import_ray, quiet_ray_data_console

        import_ray()  # a missing Ray is bad usage: exit 2 before a run is opened
        if not args.debug:
            quiet_ray = quiet_ray_data_console()
    if holds_raw_texts(args.probe) and config.probe.tokenizer is None:
        model, tokenizer = _load_pytorch_model(args.model_uri)  # raw texts: the model's own tokenizer
        probe = prepare_probe(args.probe, config, tokenizer=tokenizer)
    else:
        probe = prepare_probe(args.probe, config)  # a bad probe is refused before any model loads
        model, _ = _load_pytorch_model(args.model_uri)
    check_gate_config(
        config,
        has_baseline=bool(args.baseline_model_uri),
        has_labels=probe.labels_are_classes,
        has_masks=probe.masks is not None,
    )
    if args.run_id:
        mlflow.get_run(args.run_id)  # fails clearly if the run does not exist
    baseline_model = _load_pytorch_model(args.baseline_model_uri)[0] if args.baseline_model_uri else None
    for m in (model, baseline_model):
        if m is not None:
            check_audit_inputs(m, probe, config)  # shape, outputs, targets, methods: on one sample
    probe_sha256 = probe.sha256()
    cache_root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    BatchCache.prune(cache_root, max_age_days=STALE_CACHE_DAYS)
    caches = [BatchCache.open(cache_root, m, config, probe_sha256) for m in (model, baseline_model) if m]
    if not args.resume:
        for cache in caches:
            cache.clear()
    try:
        checked = _Checked(config, probe, probe_sha256, model, baseline_model, caches)
        return _audit_in_a_run(args, checked, quiet_ray)
    except BaseException:
        kept = sum(len(cache) for cache in caches)
        if kept:
            command = shlex.join(["mlflow-xai", *[a for a in args.argv if a != "--resume"], "--resume"])
            print(
                f"mlflow-xai: {kept} finished batch(es) are kept in {caches[0].folder.parent}; "
                f"continue with: {command}",
                file=sys.stderr,
            )
        raise


@dataclass(frozen=True)
class _Checked:
    """What ``mlflow-xai audit`` checked before opening a run: config, probe set, models, caches."""

    config: Any
    probe: Any
    probe_sha256: str
    model: Any
    baseline_model: Any
    caches: list[Any]


def _audit_in_a_run(args: argparse.Namespace, checked: _Checked, quiet_ray: Any) -> int:
    import mlflow

    from mlflow_xai.artifacts.write import write_artifacts
    from mlflow_xai.ci.gate import judge
    from mlflow_xai.tracking.log import log_report

    experiment_id = _experiment_id(args.experiment) if args.experiment and not args.run_id else None
    # An exception (an error, Ctrl-C, SIGTERM) inside this block ends the run as FAILED; finished
    # batches stay in the cache for --resume.
    with (
        quiet_ray,
        mlflow.start_run(
            run_id=args.run_id, experiment_id=experiment_id, run_name=None if args.run_id else "xai-audit"
        ) as active,
    ):
        run_id = active.info.run_id
        mlflow.set_tags({"mlflow_xai.model_uri": args.model_uri, "xai.status": "running"})
        report, metrics, baseline_metrics = _audit_and_compare(args, checked)
        result = judge(
            metrics, checked.config, baseline_metrics=baseline_metrics, seed_spread=report.seed_spread
        )
        extra_files = _gate_files(args, result, baseline_metrics)
        if args.output_dir:
            _write_folder_atomically(
                report, args.output_dir, extra_files, lambda r, f: write_artifacts(r, f, gate=result)
            )
        tags = {"xai.gate": result.status, "xai.status": "finished"}
        log_report(
            report, run_id, extra_metrics=metrics, extra_files=extra_files, extra_tags=tags, gate=result
        )
    for cache in checked.caches:
        cache.remove()  # a finished audit needs no resuming
    if not args.quiet:
        from mlflow_xai.cli.console import summary_table

        print(summary_table(metrics))
    return finish(result, args, run_id)


def _audit_and_compare(
    args: argparse.Namespace, checked: _Checked
) -> tuple[Any, dict[str, float], dict[str, float] | None]:
    """The audit's report and metrics; with a baseline model, its metrics too and, among the
    audit's metrics, the attribution drift against it."""
    from mlflow_xai.checks.drift import attribution_drift, drift_metrics
    from mlflow_xai.engine.run import audit_prepared

    progress = False if args.quiet else None  # a bar on a terminal, a line every ~10 s in a CI log
    # check_audit_inputs ran before the run was opened: no second preflight.
    options = {"probe_sha256": checked.probe_sha256, "progress": progress, "preflight": False}
    probe, config, caches = checked.probe, checked.config, checked.caches
    report = audit_prepared(checked.model, probe, config, cache=caches[0], **options)
    metrics = report.metrics()
    if checked.baseline_model is None:
        return report, metrics, None
    baseline = audit_prepared(checked.baseline_model, probe, config, cache=caches[1], **options)
    for name, result in report.methods.items():
        rankable = None if report.token_kept is None else ~report.token_kept  # text: tokens only
        drift = attribution_drift(result.attributions, baseline.methods[name].attributions, rankable=rankable)
        metrics.update(drift_metrics(drift, name))
    return report, metrics, baseline.metrics()


def _gate_files(args: argparse.Namespace, result: Any, baseline_metrics: dict[str, float] | None) -> dict:
    """The files logged beside the artifacts: the gate's result and the baseline model's metrics."""
    extra_files = {"gate.json": json.dumps(result.to_dict(), indent=2)}
    if baseline_metrics is not None:
        extra_files["baseline_metrics.json"] = json.dumps(
            {"model_uri": args.baseline_model_uri, "metrics": baseline_metrics}, indent=2
        )
    return extra_files


def _experiment_id(name: str) -> str:
    """The id of experiment ``name``, created if missing (no process-wide active experiment).

    Two audits started at once (two CI jobs) may both find it missing; the one whose create loses
    the race takes the experiment the other created.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    return client.get_experiment_by_name(name).experiment_id


def _write_folder_atomically(report: Any, target: str, extra_files: dict[str, str], write: Any) -> None:
    """Write into a temporary sibling folder, then rename it into place: a reader never sees a
    half-written folder, and an interrupted write leaves the previous one untouched."""
    import os
    import shutil
    import tempfile

    final = Path(target).resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    umask = os.umask(0)  # mkdtemp makes the folder 0700; the output is the user's, as mkdir makes it
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        write(report, staging)
        for name, text in extra_files.items():
            (staging / name).write_text(text, encoding="utf-8")
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            staging.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
