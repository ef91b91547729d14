"""The command line: ``mlflow-xai audit | gate | validate-config | demo`` (``commands``), the audit
command's run (``audit``), the demo (``demo``)
and what is printed (``console``).

May import: everything below it.
"""

from mlflow_xai.cli.audit import STALE_CACHE_DAYS
from mlflow_xai.cli.commands import EXIT_CODES, build_parser, entry, main

__all__ = [
    "EXIT_CODES",
    "STALE_CACHE_DAYS",
    "build_parser",
    "entry",
    "main",
]
