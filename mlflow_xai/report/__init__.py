"""The ``AuditReport``: per-sample results, metrics as Python floats (computed once), verdicts, and the
names of every metric an audit can produce (``metric_names``).

May import: ``config``, ``probe``, ``checks``, and the method registry of ``attribution``.
"""

from mlflow_xai.report.audit_report import AuditReport, MethodResult, object_mass_fraction
from mlflow_xai.report.metric_names import (
    DRIFT_METRICS,
    METRIC_PREFIX,
    method_metric_names,
    metric_catalogue,
    result_keys,
    summary_stats,
)

__all__ = [
    "AuditReport",
    "DRIFT_METRICS",
    "METRIC_PREFIX",
    "MethodResult",
    "method_metric_names",
    "metric_catalogue",
    "object_mass_fraction",
    "result_keys",
    "summary_stats",
]
