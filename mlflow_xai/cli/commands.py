"""The ``mlflow-xai`` command line.

Exit codes: 0 the gate passed (warnings allowed unless ``fail_on`` lists them), 1 the gate failed,
2 bad usage, config, input or a runtime error (one line on stderr; the traceback with ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any

from mlflow_xai._version import __version__
from mlflow_xai.cli.allocator import keep_freed_memory
from mlflow_xai.cli.audit import STALE_CACHE_DAYS, run_audit
from mlflow_xai.cli.console import finish, one_line

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
    _add_serve(sub)
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


def _add_serve(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="audit every new model version the registry announces by webhook",
        description="Receive MLflow model registry webhooks (model_version.created, "
        "model_version_alias.created), audit each new version against the version holding "
        "--baseline-alias, and tag it with xai.gate and xai.audit_run_id. The webhook secret is read "
        "from MLFLOW_XAI_WEBHOOK_SECRET. Runs until interrupted.",
    )
    serve.add_argument("--probe", required=True, help="probe set every version is audited on")
    serve.add_argument("--config", help="audit config YAML (default: the built-in defaults)")
    serve.add_argument("--baseline-alias", help="alias of the version to compare with, e.g. champion")
    serve.add_argument("--assign-alias", help="alias given to a version whose gate passes, e.g. audited")
    serve.add_argument("--experiment", default="xai-registry", help="experiment of the audit runs")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--workers", type=int, default=1, help="audits running at once")
    serve.add_argument("--state-dir", default=".mlflow-xai-serve", help="the queue file and batch caches")
    serve.add_argument("--max-attempts", type=int, default=3, help="tries of a failing audit before error")
    serve.add_argument("--backoff", type=float, default=5.0, help="seconds before the first retry (doubling)")
    serve.add_argument("--max-age", type=float, default=300.0, help="oldest delivery timestamp accepted, s")
    serve.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)


def _serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mlflow_xai.config.loading import load_config
    from mlflow_xai.registry.queue import JobQueue
    from mlflow_xai.registry.server import Receiver, webhook_secret
    from mlflow_xai.registry.worker import ServeSettings

    secret = webhook_secret()
    load_config(args.config)  # a bad config is refused before the receiver starts
    if not Path(args.probe).exists():
        raise ValueError(f"probe {args.probe!r} does not exist")
    state = Path(args.state_dir)
    settings = ServeSettings(
        probe=str(Path(args.probe).resolve()),
        config=str(Path(args.config).resolve()) if args.config else None,
        baseline_alias=args.baseline_alias,
        assign_alias=args.assign_alias,
        experiment=args.experiment,
        cache_dir=str(state / "cache"),
        max_attempts=args.max_attempts,
        backoff=args.backoff,
    )
    receiver = Receiver(
        settings, JobQueue(state / "queue.sqlite"), secret=secret, host=args.host, port=args.port,
        workers=args.workers, max_age=args.max_age,
    )  # fmt: skip
    host, port = receiver.address
    print(f"mlflow-xai serve: listening on http://{host}:{port}/webhook", flush=True)
    receiver.serve_forever()
    return 0


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
    command = {
        "demo": _demo, "audit": run_audit, "gate": _gate, "validate-config": _validate, "serve": _serve,
    }[args.command]  # fmt: skip
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
        print(f"mlflow-xai: error: {one_line(exc)}", file=sys.stderr)
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
    from mlflow_xai.report.seed_noise import seeded_thresholds

    seeded = seeded_thresholds(config)
    if seeded and config.gate.seed_runs == 1:
        print(
            f"  note: {len(seeded)} gate threshold(s) hold metrics that move with the seeds "
            f"({', '.join(seeded)}); gate: {{seed_runs: 2}} measures that noise and flags a level within it"
        )
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
    return finish(result, args, args.run_id)


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
