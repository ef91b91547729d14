"""What the command line prints: the metrics as a table, and the gate's checks and verdict.
"""

from __future__ import annotations

import argparse
from typing import Any


def summary_table(metrics: dict[str, float]) -> str:
    """One line per method result (``occlusion``, or ``occlusion/class_208`` with several targets)."""
    keys = sorted(
        k.removeprefix("xai/").removesuffix("/samples")
        for k in metrics
        if k.startswith("xai/") and k.endswith("/samples") and k != "xai/probe/samples"
    )
    width = max([22, *(len(key) + 2 for key in keys)])
    header = f"{'method':<{width}}{'samples':>8}{'compl. median':>15}{'p95':>11}{'max':>11}{'seconds':>10}"
    lines = [header, "-" * len(header)]

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.2e}"

    for name in keys:
        m = {k.rsplit("/", 1)[1]: v for k, v in metrics.items() if k.rsplit("/", 1)[0] == f"xai/{name}"}
        lines.append(
            f"{name:<{width}}{int(m.get('samples', 0)):>8}{cell(m.get('completeness_rel_error_median')):>15}"
            f"{cell(m.get('completeness_rel_error_p95')):>11}{cell(m.get('completeness_rel_error_max')):>11}"
            f"{m.get('seconds', 0.0):>10.1f}"
        )
    return "\n".join(lines)


def finish(result: Any, args: argparse.Namespace, run_id: str) -> int:
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


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if text else type(exc).__name__
