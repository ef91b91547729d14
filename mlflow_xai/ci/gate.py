"""The quality gate: judge an audit's metrics against the config's checks and thresholds.

Judging reads metrics only, so ``mlflow-xai audit`` (fresh metrics) and ``mlflow-xai gate``
(metrics read back from a run) give the same verdict on the same numbers.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from mlflow_xai.config.audit_config import AuditConfig
from mlflow_xai.config.sections import GateConfig, ThresholdConfig
from mlflow_xai.errors import ConfigError
from mlflow_xai.report.metric_names import metric_catalogue, result_keys

LEVELS = ("pass", "warn", "fail")


@dataclass(frozen=True)
class GateCheck:
    name: str  # "<method>.completeness" or a metric name
    kind: str  # "method_check" | "threshold"
    level: str  # pass | warn | fail
    message: str
    value: float | None = None
    # gate.seed_runs > 1: the metric's spread over the seed runs, when a level lies within it.
    seed_spread: float | None = None


@dataclass(frozen=True)
class GateResult:
    checks: list[GateCheck]
    fail_on: tuple[str, ...]

    @property
    def status(self) -> str:
        """The worst level of any check: pass, warn or fail (the ``xai.gate`` tag); ``unchecked``
        when the config has no gate section and no method with a check (nothing to judge)."""
        if not self.checks:
            return "unchecked"
        return max((c.level for c in self.checks), key=LEVELS.index)

    @property
    def exit_code(self) -> int:
        return 1 if any(c.level in self.fail_on for c in self.checks) else 0

    @property
    def noise_warnings(self) -> list[str]:
        """The thresholds whose verdict another seed could change (a level within the seed spread)."""
        return [c.message for c in self.checks if c.seed_spread is not None]

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "fail_on": list(self.fail_on),
            "checks": [asdict(c) for c in self.checks],
            "noise_warnings": self.noise_warnings,
        }


def judge(
    metrics: Mapping[str, float],
    config: AuditConfig,
    *,
    baseline_metrics: Mapping[str, float] | None = None,
    seed_spread: Mapping[str, float] | None = None,
) -> GateResult:
    """Judge ``metrics`` (``xai/<method>/<quantity>`` -> float) by ``config.gate``.

    A threshold whose metric the configured methods produce, but which has no value in this
    audit (every baseline degenerate: the model gave nothing to judge), fails with the reason. A
    gate that evaluates no check, names a metric no configured method can produce, or asks for a
    relative threshold without baseline metrics is an error, never a pass. Without a ``gate:``
    section and without a method that has a check, the result is ``unchecked`` (exit code 0).
    ``seed_spread`` (``AuditReport.seed_spread``) flags each threshold with a level closer to its
    metric than the metric's spread over seeds: the verdict stands, with a note that another seed
    could change it.
    """
    gate: GateConfig = config.gate
    checks: list[GateCheck] = []
    if gate.method_checks:
        tolerance = config.checks.completeness.tolerance
        for key in sorted(result_keys(list(config.methods.enabled()), config.target_slots())):
            check = _method_check(key, metrics, tolerance)
            if check is not None:
                checks.append(check)
    catalogue = metric_catalogue(config) if gate.thresholds else {}
    for written, threshold in gate.thresholds.items():
        for name in per_target(written, config, catalogue):
            if name in metrics:
                check = _judge_threshold(name, float(metrics[name]), threshold, baseline_metrics)
                if seed_spread and name in seed_spread:
                    check = _with_noise(check, threshold, seed_spread[name], baseline_metrics)
                checks.append(check)
            else:
                checks.append(GateCheck(name, "threshold", "fail", _why_missing(name, metrics)))
    if not checks and gate_is_configured(config):
        raise ConfigError(_NO_CHECK)
    return GateResult(checks, tuple(gate.fail_on))


def per_target(name: str, config: AuditConfig, catalogue: Mapping[str, str]) -> list[str]:
    """The metrics a threshold judges: the one it names, or in an audit of several targets, a
    method's metric named without a target (``xai/occlusion/seconds``) once per target
    (``xai/occlusion/class_208/seconds``, ...): every target must meet it. A name that is neither
    is refused with the metrics that exist."""
    if name in catalogue:
        return [name]
    _, method, rest = name.split("/", 2)  # GateConfig takes only xai/<method>/...
    slots = config.target_slots()
    each = [f"xai/{method}/{slot}/{rest}" for slot in slots]  # one target: never in the catalogue
    if all(metric in catalogue for metric in each):
        return each
    raise ConfigError(_unknown_metric(name, catalogue, slots))


def _judge_threshold(
    name: str, value: float, threshold: ThresholdConfig, baseline_metrics: Mapping[str, float] | None
) -> GateCheck:
    base = None
    if threshold.relative:
        if baseline_metrics is None or name not in baseline_metrics:
            raise ConfigError(
                f"gate.thresholds.{name} is relative to the baseline model, but no baseline "
                "metrics are available; pass --baseline-model-uri"
            )
        base = float(baseline_metrics[name])
    return _threshold_check(name, value, threshold, base)


def _with_noise(
    check: GateCheck, threshold: ThresholdConfig, spread: float, baseline_metrics: Mapping[str, float] | None
) -> GateCheck:
    """``check`` with a note when one of its levels lies within ``spread`` of the metric."""
    value = check.value
    if value is None or not np.isfinite(value):
        return check
    levels = [level for level in (threshold.warn, threshold.fail) if level is not None]
    if threshold.relative:
        base = float(baseline_metrics[check.name])  # _judge_threshold has made sure it is there
        sign = 1.0 if threshold.higher_is_better else -1.0
        scale = max(abs(base), 1e-12)
        worse = -sign * (value - base) / scale  # the relative change in the bad direction
        near = any(abs(worse - level) <= spread / scale for level in levels)
    else:
        near = any(abs(value - level) <= spread for level in levels)
    if not near:
        return check
    note = (
        f"; within the seed noise (spread {spread:.3g} over gate.seed_runs): another seed could change this"
    )
    return dataclasses.replace(check, message=check.message + note, seed_spread=spread)


def gate_is_configured(config: AuditConfig) -> bool:
    """Whether the config has a ``gate:`` section: then it must check something. Without one, an
    audit of methods that have no check (occlusion only, a GradCAM review) is ``unchecked``."""
    return "gate" in config.model_fields_set


_NEEDS = {
    "labels": "probe labels",
    "masks": "ground-truth masks in the probe set",
    "baseline_model": "a baseline model to compare with (--baseline-model-uri)",
}


def check_gate_config(
    config: AuditConfig, *, has_baseline: bool, has_labels: bool = True, has_masks: bool = True
) -> None:
    """Everything about the gate that can be known before any compute: every threshold names a
    metric that the enabled methods, as configured, produce on this probe set (each method declares
    its metrics); relative thresholds have a baseline model; and the gate checks something."""
    catalogue = metric_catalogue(config)
    available = {"labels": has_labels, "masks": has_masks, "baseline_model": has_baseline}
    for written, threshold in config.gate.thresholds.items():
        name = per_target(written, config, catalogue)[0]  # every target needs the same
        need = catalogue[name]
        if need and not available[need]:
            raise ConfigError(f"gate.thresholds names metric {name!r}, which needs {_NEEDS[need]}")
        if threshold.relative and not has_baseline:
            raise ConfigError(
                f"gate.thresholds.{name} is relative to the baseline model, but no baseline "
                "metrics are available; pass --baseline-model-uri"
            )
    method_checks = config.gate.method_checks and _checked_methods(config)
    if not config.gate.thresholds and not method_checks and gate_is_configured(config):
        raise ConfigError(_NO_CHECK)


_NO_CHECK = (
    "the gate evaluates no check: enable a method with a completeness check "
    "(integrated_gradients, deeplift, deeplift_shap, gradient_shap) with gate.method_checks true, "
    "or add gate.thresholds"
)


def _checked_methods(config: AuditConfig) -> list[str]:
    from mlflow_xai.attribution.methods.base import build

    return [name for name, cfg in config.methods.enabled().items() if build(name, cfg).has_completeness]


def _unknown_metric(name: str, catalogue: Mapping[str, str], slots: list[str] | None = None) -> str:
    method = name.split("/")[1]
    own = sorted(k for k in catalogue if k.split("/")[1] == method)
    if not own:
        enabled = sorted({k.split("/")[1] for k in catalogue} - {"probe"})
        return (
            f"gate.thresholds names metric {name!r}, but method {method!r} is not enabled "
            f"(enabled: {', '.join(enabled)})"
        )
    each = ""
    if slots is not None and len(slots) > 1:
        # Several targets: the names without a target, each judged once per target.
        own = sorted({f"xai/{method}/{k.rsplit('/', 1)[1]}" for k in own})
        each = f" for each target ({', '.join(slots)}; or add the target: xai/{method}/{slots[0]}/...)"
    close = difflib.get_close_matches(name, own, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return (
        f"gate.thresholds names metric {name!r}, which {method!r} as configured does not produce"
        f"{hint} It produces{each}: {', '.join(own)}"
    )


def _why_missing(name: str, metrics: Mapping[str, float]) -> str:
    """Why a metric the configured methods can produce has no value in this audit."""
    prefix = name.rsplit("/", 1)[0]  # xai/<method> or xai/<method>/<target>
    samples = metrics.get(f"{prefix}/samples")
    degenerate = metrics.get(f"{prefix}/degenerate_baseline_count")
    if samples is not None and degenerate is not None and degenerate >= samples:
        return (
            f"{name} has no value: every one of {int(samples)} samples has a degenerate baseline "
            "(|F(x) - F(x')| below the floor), so the model gave nothing to judge"
        )
    if name.endswith("object_mass_fraction_mean"):
        return f"{name} has no value: the probe set has no masks, or every attribution map is zero"
    if "/drift_" in name:
        return f"{name} has no value: no baseline model was audited beside this one"
    return f"{name} has no value: no sample gave a finite value for it"


def _method_check(method: str, metrics: Mapping[str, float], tolerance: float) -> GateCheck | None:
    prefix = f"xai/{method}/"
    samples = metrics.get(prefix + "samples")
    degenerate = metrics.get(prefix + "degenerate_baseline_count")
    if samples is None or degenerate is None:
        return None  # the method has no completeness check
    name = f"{method}.completeness"
    judged = int(round(samples - degenerate))
    if judged <= 0:
        return GateCheck(
            name,
            "method_check",
            "fail",
            f"every one of {int(samples)} samples has a degenerate baseline "
            "(|F(x) - F(x')| below the floor): completeness could not be judged",
        )
    fraction = metrics.get(prefix + "completeness_pass_fraction", 0.0)
    failed = int(round((1.0 - fraction) * judged))
    note = f"; {int(degenerate)} degenerate baseline(s) not judged" if degenerate else ""
    if failed:
        worst = metrics.get(prefix + "completeness_rel_error_max", float("nan"))
        return GateCheck(
            name,
            "method_check",
            "fail",
            f"{failed} of {judged} samples above {tolerance:g} relative completeness error "
            f"(worst {worst:.3g}){note}",
            fraction,
        )
    return GateCheck(
        name,
        "method_check",
        "pass",
        f"all {judged} samples within {tolerance:g} relative completeness error{note}",
        fraction,
    )


def _threshold_check(
    name: str, value: float, threshold: ThresholdConfig, baseline: float | None
) -> GateCheck:
    if not np.isfinite(value):
        return GateCheck(name, "threshold", "fail", f"{name} is {value}, not a finite number", value)
    sign = 1.0 if threshold.higher_is_better else -1.0
    for level in ("fail", "warn"):
        limit = getattr(threshold, level)
        if limit is None:
            continue
        if baseline is None:
            bad = sign * (value - limit) < 0
            if bad:
                word = "below" if threshold.higher_is_better else "above"
                return GateCheck(name, "threshold", level, f"{name} = {value:.4g} is {word} {limit:g}", value)
        else:
            change = sign * (value - baseline) / max(abs(baseline), 1e-12)  # > 0 is better
            if -change > limit:
                return GateCheck(
                    name,
                    "threshold",
                    level,
                    f"{name} = {value:.4g} is {-change:.1%} worse than the baseline model's "
                    f"{baseline:.4g} (allowed {limit:.1%})",
                    value,
                )
    where = "" if baseline is None else f" (baseline model {baseline:.4g})"
    return GateCheck(name, "threshold", "pass", f"{name} = {value:.4g} within its levels{where}", value)
