"""The gate a pipeline holds: thresholds and method checks judged into pass/warn/fail (``gate``), and
the result published as JUnit XML, a markdown summary and annotations (``publish``).

May import: ``config``, ``report``, ``checks``, the method registry of ``attribution``. Never the
engine: a gate judges metrics, wherever they came from.
"""

from mlflow_xai.checks.drift import attribution_drift, drift_metrics
from mlflow_xai.ci.gate import (
    LEVELS,
    GateCheck,
    GateResult,
    check_gate_config,
    gate_is_configured,
    judge,
    per_target,
)
from mlflow_xai.ci.publish import github_annotations, junit_xml, markdown_summary, publish

__all__ = [
    "GateCheck",
    "GateResult",
    "LEVELS",
    "attribution_drift",
    "check_gate_config",
    "drift_metrics",
    "gate_is_configured",
    "github_annotations",
    "judge",
    "junit_xml",
    "markdown_summary",
    "per_target",
    "publish",
]
