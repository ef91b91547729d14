"""The allocator setting every benchmark shares: by default, the one the command line runs with."""

from __future__ import annotations

import argparse

from mlflow_xai.cli.allocator import keep_freed_memory


def add_allocator_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="keep glibc's default thresholds (the command line raises them: mlflow_xai.allocator)",
    )


def set_allocator(args: argparse.Namespace, *, quiet: bool = False) -> None:
    raised = not args.default_allocator and keep_freed_memory()
    if not quiet:
        print(f"allocator: {'glibc thresholds raised, as in the command line' if raised else 'default'}")
