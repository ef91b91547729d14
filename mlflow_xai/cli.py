"""The ``mlflow-xai`` command line."""

from __future__ import annotations

import argparse
import sys

from mlflow_xai._version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlflow-xai",
        description="Audit the attributions of a PyTorch model logged in MLflow.",
    )
    parser.add_argument("--version", action="version", version=f"mlflow-xai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="train a small CNN on synthetic shapes, log it to MLflow and audit it",
        description="Train (or reuse) the example shapes CNN, log it to the tracking store "
        "(MLFLOW_TRACKING_URI, or sqlite:///mlflow.db here), audit it through "
        "mlflow.models.evaluate and print where to look.",
    )
    demo.add_argument("--config", help="audit config YAML (default: the built-in defaults)")
    demo.add_argument("--retrain", action="store_true", help="train a new model even if one exists")

    run = sub.add_parser(
        "audit",
        help="audit a logged model on a probe set; the exit code is the verdict",
        description="Audit a PyTorch model logged in MLflow on a probe set and log the results to "
        "an MLflow run. Exit codes: 0 passed, 1 the audit's checks failed, 2 bad usage, config, "
        "input or a runtime error.",
    )
    run.add_argument("--model-uri", required=True, help="e.g. runs:/<run id>/model or models:/m-...")
    run.add_argument(
        "--probe", required=True, help=".npz with 'inputs' and optional 'labels', 'masks', 'ids'"
    )
    run.add_argument("--config", help="audit config YAML (default: the built-in defaults)")
    run.add_argument("--experiment", help="experiment name for a new audit run")
    run.add_argument("--run-id", help="log into this existing run instead of a new one")
    run.add_argument("--output-dir", help="also keep the artifacts in this local folder")
    run.add_argument("--device", help="override the config's device (auto, cpu, cuda, cuda:N, mps)")
    run.add_argument("--quiet", action="store_true", help="print nothing but errors")
    run.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "demo":
        from mlflow_xai.demo import run_demo

        return run_demo(config=args.config, retrain=args.retrain)
    if args.command == "audit":
        try:
            return _audit(args)
        except Exception as exc:
            if args.debug:
                raise
            print(f"mlflow-xai: error: {_one_line(exc)}", file=sys.stderr)
            return 2
    parser.error(f"unknown command {args.command!r}")
    return 2


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if text else type(exc).__name__


def _audit(args: argparse.Namespace) -> int:
    import mlflow

    from mlflow_xai.artifacts import write_artifacts
    from mlflow_xai.config import load_config
    from mlflow_xai.engine import audit
    from mlflow_xai.errors import ModelError
    from mlflow_xai.probe import ProbeSet
    from mlflow_xai.tracking import log_report

    # Everything is validated before any compute and before anything is logged.
    config = load_config(args.config, **({"device": args.device} if args.device else {}))
    probe = ProbeSet.from_npz(args.probe)
    try:
        pyfunc = mlflow.pyfunc.load_model(args.model_uri)
    except Exception as exc:
        raise ModelError(f"cannot load model {args.model_uri!r}: {_one_line(exc)}") from None
    flavors = sorted(pyfunc.metadata.flavors)
    if "pytorch" not in flavors:
        raise ModelError(
            f"model {args.model_uri!r} is not a PyTorch model (its flavors: {', '.join(flavors)}); "
            "mlflow-xai audits models logged with mlflow.pytorch.log_model"
        )
    report = audit(pyfunc.get_raw_model(), probe, config)
    if report.verdict == "n/a":
        raise ValueError(
            "the audit evaluated no check (no configured method has one), so it cannot pass; "
            "enable integrated_gradients or another method with a completeness check"
        )
    if args.output_dir:
        write_artifacts(report, args.output_dir)
    if args.run_id:
        run_id = args.run_id
        mlflow.get_run(run_id)  # fails clearly if the run does not exist
        log_report(report, run_id)
    else:
        if args.experiment:
            mlflow.set_experiment(args.experiment)
        with mlflow.start_run(run_name="xai-audit") as active:
            run_id = active.info.run_id
            mlflow.set_tag("mlflow_xai.model_uri", args.model_uri)
            log_report(report, run_id)
    if not args.quiet:
        from mlflow_xai.demo import summary_table

        print(summary_table(report.metrics()))
        print(f"verdict: {report.verdict}   run: {run_id}")
    return 1 if report.verdict == "fail" else 0


if __name__ == "__main__":
    sys.exit(main())
