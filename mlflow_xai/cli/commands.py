"""The ``mlflow-xai`` command line.

Exit codes: 0 the gate passed (warnings allowed unless ``fail_on`` lists them), 1 the gate failed,
2 bad usage, config, input or a runtime error (one line on stderr; the traceback with ``--debug``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow_xai._version import __version__
from mlflow_xai.cli.allocator import keep_freed_memory

STALE_CACHE_DAYS = 7  # a resume cache older than this is another config's leftover: removed
EXIT_CODES = "Exit codes: 0 passed, 1 the gate failed, 2 bad usage, config, input or a runtime error."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlflow-xai",
        description="Audit the attributions of a PyTorch model logged in MLflow.",
    )
    parser.add_argument("--version", action="version", version=f"mlflow-xai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_audit(sub)
    _add_gate(sub)
    _add_validate(sub)
    return parser


def _add_demo(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="train a small CNN on synthetic shapes, log it to MLflow and audit it",
        description="Train (or reuse) the example shapes CNN, log it to the tracking store "
        "(MLFLOW_TRACKING_URI, or sqlite:///mlflow.db here), audit it through "
        "mlflow.models.evaluate and print where to look.",
    )
    demo.add_argument("--config", help="audit config YAML (default: the built-in defaults)")
    demo.add_argument("--retrain", action="store_true", help="train a new model even if one exists")
    demo.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, and MLflow's INFO lines"
    )


def _add_audit(sub: Any) -> None:
    run = sub.add_parser(
        "audit",
        help="audit a logged model on a probe set and gate on the result",
        description="Audit a PyTorch model logged in MLflow on a probe set, judge it by the "
        f"config's gate and log everything to an MLflow run. {EXIT_CODES}",
    )
    run.add_argument("--model-uri", required=True, help="e.g. runs:/<run id>/model or models:/m-...")
    run.add_argument(
        "--probe",
        required=True,
        help=".npz (inputs, optional labels, masks, ids), .npy, or an image folder with one "
        "subfolder per class (preprocessed as the config's probe section says)",
    )
    run.add_argument("--config", help="audit config YAML (default: the built-in defaults)")
    run.add_argument("--experiment", help="experiment name for a new audit run")
    run.add_argument("--run-id", help="log into this existing run instead of a new one")
    run.add_argument(
        "--baseline-model-uri",
        help="a model to compare with on the same probe set (e.g. models:/name@champion): "
        "attribution drift metrics and relative thresholds",
    )
    run.add_argument("--output-dir", help="also keep the artifacts in this local folder")
    run.add_argument(
        "--cache-dir",
        default=None,
        help="where finished batches are kept while the audit runs, for --resume (default: the user "
        "cache directory, e.g. ~/.cache/mlflow-xai/batches or $XDG_CACHE_HOME/mlflow-xai/batches); "
        f"folders untouched for {STALE_CACHE_DAYS} days are removed",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted audit from the batches it finished (same model, config, probe)",
    )
    run.add_argument("--device", help="override the config's device (auto, cpu, cuda, cuda:N, mps)")
    run.add_argument(
        "--engine",
        choices=["local", "ray"],
        help="override the config's distributed.engine: attribute batches here or on Ray actors "
        "(pip install 'mlflow-xai[ray]')",
    )
    _add_outputs(run)


def _add_gate(sub: Any) -> None:
    gate = sub.add_parser(
        "gate",
        help="re-judge an audited run by a config's gate, without recomputing",
        description=f"Judge the metrics an audit logged in a run by a config's gate. {EXIT_CODES}",
    )
    gate.add_argument("--run-id", required=True, help="the audited run")
    gate.add_argument("--config", help="config YAML whose gate section to apply")
    _add_outputs(gate)


def _add_validate(sub: Any) -> None:
    validate = sub.add_parser(
        "validate-config",
        help="check a config file alone",
        description="Validate an audit config. Exit code 0 when valid, 2 with one line when not.",
    )
    validate.add_argument("file", nargs="?", help="audit config YAML (default: the built-in defaults)")
    validate.add_argument(
        "--input-shape",
        help="shape of one input, e.g. 3,224,224 or 20: show what the shape-dependent defaults "
        "(occlusion windows) resolve to",
    )
    validate.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)


def _add_outputs(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--junit", help="write a JUnit XML file (one test case per check)")
    cmd.add_argument("--summary", help="write a markdown summary (also to $GITHUB_STEP_SUMMARY)")
    cmd.add_argument("--quiet", action="store_true", help="print nothing but errors")
    cmd.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error, and MLflow's and Ray Data's INFO lines",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the resume command of a failed audit
    if args.command is None:
        parser.print_help()
        return 0
    keep_freed_memory()  # this process is ours: trade kept memory for passes without page faults
    command = {"demo": _demo, "audit": _audit, "gate": _gate, "validate-config": _validate}[args.command]
    # MLflow's own INFO lines (database set-up, model loading) would bury the verdict; --debug shows them.
    mlflow_logger = logging.getLogger("mlflow")
    level = mlflow_logger.level
    if not args.debug:
        mlflow_logger.setLevel(logging.WARNING)
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return command(args)
    except KeyboardInterrupt:
        print("mlflow-xai: error: interrupted", file=sys.stderr)
        return 2
    except Exception as exc:
        if args.debug:
            raise
        print(f"mlflow-xai: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        mlflow_logger.setLevel(level)
        signal.signal(signal.SIGTERM, previous_sigterm)


def _demo(args: argparse.Namespace) -> int:
    from mlflow_xai.cli.demo import run_demo

    return run_demo(config=args.config, retrain=args.retrain)


def _raise_interrupt(signum: int, frame: Any) -> None:
    # SIGTERM (a CI job cancelled, a pod stopped) unwinds like Ctrl-C: the run ends as FAILED.
    raise KeyboardInterrupt(f"signal {signum}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if text else type(exc).__name__


def _validate(args: argparse.Namespace) -> int:
    from mlflow_xai.config.loading import load_config

    shape = _input_shape(args.input_shape) if args.input_shape else None
    config = load_config(args.file)
    methods = ", ".join(config.methods.enabled())
    name = args.file or "the built-in defaults"
    print(f"{name}: valid (methods: {methods}; {len(config.gate.thresholds)} gate threshold(s))")
    slots = config.target_slots()
    if len(slots) > 1:
        print(f"  {len(slots)} targets, each with its own masks and metrics: {', '.join(slots)}")
    if shape is not None:
        import math

        from mlflow_xai.attribution.methods.base import build

        ig = config.methods.integrated_gradients
        if ig is not None:
            print(
                f"  integrated_gradients on inputs of shape {list(shape)}: internal_batch_size "
                f"{ig.points_per_pass(math.prod(shape))} (interpolated inputs per pass)"
            )
        occlusion = config.methods.occlusion
        if occlusion is not None:
            window, strides = build("occlusion", occlusion).windows(shape)
            count = math.prod(
                math.ceil((s - w) / t) + 1 for s, w, t in zip(shape, window, strides, strict=True)
            )
            print(
                f"  occlusion on inputs of shape {list(shape)}: sliding_window_shapes {list(window)}, "
                f"strides {list(strides)} ({count} windows per sample)"
            )
    return 0


def _input_shape(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(
            f"--input-shape must be positive integers separated by commas, e.g. 3,224,224; got {text!r}"
        )
    return tuple(int(p) for p in parts)


def _load_pytorch_model(uri: str) -> Any:
    import mlflow

    from mlflow_xai.errors import ModelError

    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        raise ModelError(f"cannot load model {uri!r}: {_one_line(exc)}") from None
    flavors = sorted(pyfunc.metadata.flavors)
    if "pytorch" not in flavors:
        raise ModelError(
            f"model {uri!r} is not a PyTorch model (its flavors: {', '.join(flavors)}); "
            "mlflow-xai audits models logged with mlflow.pytorch.log_model"
        )
    return pyfunc.get_raw_model()


def _audit(args: argparse.Namespace) -> int:
    import mlflow

    from mlflow_xai.ci.gate import check_gate_config
    from mlflow_xai.config.loading import load_config
    from mlflow_xai.engine.cache import BatchCache, default_cache_dir
    from mlflow_xai.engine.run import check_audit_inputs, prepare_probe

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
    probe = prepare_probe(args.probe, config)
    check_gate_config(
        config,
        has_baseline=bool(args.baseline_model_uri),
        has_labels=probe.labels_are_classes,
        has_masks=probe.masks is not None,
    )
    if args.run_id:
        mlflow.get_run(args.run_id)  # fails clearly if the run does not exist
    model = _load_pytorch_model(args.model_uri)
    baseline_model = _load_pytorch_model(args.baseline_model_uri) if args.baseline_model_uri else None
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
        result = judge(metrics, checked.config, baseline_metrics=baseline_metrics)
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
    return _finish(result, args, run_id)


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
        drift = attribution_drift(result.attributions, baseline.methods[name].attributions)
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


def _gate(args: argparse.Namespace) -> int:
    import tempfile

    from mlflow import MlflowClient

    from mlflow_xai.ci.gate import judge
    from mlflow_xai.config.loading import load_config

    config = load_config(args.config)
    client = MlflowClient()
    run = client.get_run(args.run_id)
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("xai/")}
    if not metrics:
        raise ValueError(f"run {args.run_id} has no xai/ metrics: it was not audited by mlflow-xai")
    baseline_metrics = None
    listed = {a.path for a in client.list_artifacts(args.run_id, "xai")}
    if "xai/baseline_metrics.json" in listed:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(args.run_id, "xai/baseline_metrics.json", tmp)
            with open(path, encoding="utf-8") as fh:
                baseline_metrics = json.load(fh)["metrics"]
    result = judge(metrics, config, baseline_metrics=baseline_metrics)
    client.set_tag(args.run_id, "xai.gate", result.status)
    return _finish(result, args, args.run_id)


def _finish(result: Any, args: argparse.Namespace, run_id: str) -> int:
    from mlflow_xai.ci.publish import publish

    for line in publish(result, junit=args.junit, summary=args.summary, run_id=run_id):
        print(line)
    if not args.quiet:
        for check in result.checks:
            print(f"  {check.level.upper():<5} {check.name}: {check.message}")
        if result.status == "unchecked":
            print(
                "  nothing was checked: no method with a check ran and the config has no gate section; "
                "masks and metrics are logged for review"
            )
        print(f"gate: {result.status}   run: {run_id}")
    return result.exit_code


def entry() -> None:
    """The ``mlflow-xai`` command: ``main``, then a quick exit.

    Once torch and mlflow are imported, the interpreter's own teardown (freeing every module) takes
    about 2 s on a small machine, after the audit is done and logged. The command waits for its
    threads, runs the exit handlers (mlflow's among them) and flushes its output, as the interpreter
    would, then ends the process without that teardown."""
    import atexit
    import os
    import threading

    code = main()
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
