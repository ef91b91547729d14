"""The gate's fail levels as MLflow ``MetricThreshold``s, for ``mlflow.validate_evaluation_results``."""

from __future__ import annotations

from mlflow_xai.ci.gate import per_target
from mlflow_xai.config.audit_config import AuditConfig
from mlflow_xai.report.metric_names import metric_catalogue


def metric_thresholds(config: AuditConfig) -> dict[str, object]:
    """The config's absolute fail levels as MLflow ``MetricThreshold``s, for
    ``mlflow.validate_evaluation_results``. Relative levels (an allowed degradation against a
    baseline) have no MetricThreshold equivalent and are left to ``mlflow-xai gate``."""
    from mlflow.models import MetricThreshold

    out = {}
    catalogue = metric_catalogue(config)
    for written, t in config.gate.thresholds.items():
        if t.relative or t.fail is None:
            continue
        for name in per_target(written, config, catalogue):
            out[name] = MetricThreshold(threshold=float(t.fail), greater_is_better=t.higher_is_better)
    return out
