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
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
