"""The names of an audit's metrics and results, known from the config before any compute.
"""

from __future__ import annotations

from typing import Any

from mlflow_xai.checks.completeness import COMPLETENESS_METRICS
from mlflow_xai.checks.eraser import ERASER_QUANTITIES
from mlflow_xai.checks.faithfulness import DELETION_INSERTION_QUANTITIES
from mlflow_xai.checks.randomisation import RANDOMISATION_QUANTITIES
from mlflow_xai.config.audit_config import AuditConfig

METRIC_PREFIX = "xai"

#: Per-method drift against a baseline model (``mlflow_xai.gate.drift_metrics``).
DRIFT_METRICS = tuple(
    f"{quantity}_{stat}"
    for quantity in ("drift_rank_correlation", "drift_topk_overlap")
    for stat in ("median", "min")
)


#: The per-method checks beyond completeness, by their key under ``checks:``, and the per-sample
#: quantities each adds to every method's results, with their kinds (flags or numbers).
CHECK_QUANTITIES: dict[str, dict[str, type]] = {
    "deletion_insertion": dict.fromkeys(DELETION_INSERTION_QUANTITIES, float),
    "infidelity": {"infidelity": float},
    "sensitivity": {"sensitivity_max": float},
    "randomisation": RANDOMISATION_QUANTITIES,
    "eraser": dict.fromkeys(ERASER_QUANTITIES, float),
}


def summary_stats(kind: type) -> tuple[str, ...]:
    """How a per-sample quantity is summarised in metrics: flags as a fraction, numbers by stats."""
    return ("fraction",) if kind is bool else ("mean", "p95", "max")


def method_metric_names(method: Any, checks: Any = None) -> set[str]:
    """The ``<quantity>_<stat>`` metrics an attribution method, as configured, can produce, with
    those of the configured ``checks`` (a ``ChecksConfig``) that apply to every method."""
    names = {"seconds", "samples"}
    if method.has_completeness:
        names.update(COMPLETENESS_METRICS)
    quantities = dict(method.per_sample_quantities())
    for check, produced in CHECK_QUANTITIES.items():
        if checks is not None and getattr(checks, check) is not None:
            quantities.update(produced)
            names.add(f"{check}_seconds")
    for key, kind in quantities.items():
        names.update(f"{key}_{stat}" for stat in summary_stats(kind))
    return names


def result_keys(methods: list[str], slots: list[str]) -> dict[str, tuple[str, int]]:
    """The key of each (method, target slot) result: the method's name for an audit of one target,
    ``<method>/<slot>`` (``occlusion/class_208``) for several; each mapped to (method, slot index).
    Metric names (``xai/<key>/...``) and artifact folders follow the keys."""
    if len(slots) == 1:
        return {name: (name, 0) for name in methods}
    return {f"{name}/{slot}": (name, k) for name in methods for k, slot in enumerate(slots)}


def metric_catalogue(config: AuditConfig) -> dict[str, str]:
    """Every metric an audit with ``config`` can produce, mapped to what it needs beyond the config:
    ``""`` (nothing), ``"labels"`` (probe labels), ``"masks"`` (ground-truth masks in the probe set)
    or ``"baseline_model"`` (a model to compare with)."""
    from mlflow_xai.attribution.methods.base import build

    slots = config.target_slots()
    out = {
        f"{METRIC_PREFIX}/probe/samples": "",
        f"{METRIC_PREFIX}/probe/accuracy": "labels",
        f"{METRIC_PREFIX}/probe/object_area_fraction_mean": "masks",
    }
    enabled = config.methods.enabled()
    names = {
        name: method_metric_names(build(name, method_config), config.checks)
        for name, method_config in enabled.items()
    }
    for key, (name, _) in result_keys(list(enabled), slots).items():
        prefix = f"{METRIC_PREFIX}/{key}/"
        out.update(dict.fromkeys((prefix + metric for metric in names[name]), ""))
        out[prefix + "object_mass_fraction_mean"] = "masks"
        out.update(dict.fromkeys((prefix + metric for metric in DRIFT_METRICS), "baseline_model"))
    if config.methods.integrated_gradients is not None and config.artifacts.sheet_samples > 0:
        out[f"{METRIC_PREFIX}/integrated_gradients/figures_seconds"] = ""  # the path figures' cost
    return out
