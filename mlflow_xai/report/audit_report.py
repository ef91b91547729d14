"""The AuditReport: per-sample results, metrics as Python floats, and verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlflow_xai.checks.completeness import CompletenessResult
from mlflow_xai.config.audit_config import AuditConfig
from mlflow_xai.probe.probe_set import CLASS_INDEX, ProbeSet
from mlflow_xai.report.metric_names import METRIC_PREFIX, summary_stats
from mlflow_xai.report.tokens import token_text, top_tokens


def object_mass_fraction(attributions: np.ndarray, masks: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Per sample: the share of |attribution| that falls on the ground-truth object mask.

    Channels are summed; a sample whose map is all zero gets NaN. Compare with the object's share
    of the image area: a map that ignores the object scores about that share or less.
    """
    out = np.empty(len(attributions))
    for start in range(0, len(attributions), chunk):
        a = np.abs(attributions[start : start + chunk].astype(np.float64))
        m = masks[start : start + chunk].astype(bool)
        while a.ndim > m.ndim:  # (N, C, H, W) against (N, H, W)
            a = a.sum(axis=1)
        total = a.reshape(len(a), -1).sum(axis=1)
        on_object = (a * m).reshape(len(a), -1).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + len(a)] = np.where(total > 0, on_object / total, np.nan)
    return out


def _p95(values: np.ndarray) -> float:
    return float(np.percentile(values, 95))


@dataclass
class MethodResult:
    """One method's results for one target slot. ``name`` is the result's key: the method's name,
    or ``<method>/<slot>`` in an audit of several targets (``occlusion/class_208``)."""

    name: str
    attributions: np.ndarray  # (N, *input_shape), float16 or float32
    seconds: float
    completeness: CompletenessResult | None = None
    # Per-sample quantities a method reports beside its attributions (e.g. IG's steps used),
    # each an (N,) array: numbers are summarised as _mean/_p95/_max, booleans as _fraction.
    # An (N, k) array is a curve per sample (deletion, the randomisation cascade): it is drawn in
    # the report, not summarised.
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    method: str = ""  # the configured method (``name`` without the slot); defaults to ``name``
    target: str | None = None  # the target slot (``class_208``, ``top2``) when the audit has several
    targets: np.ndarray | None = None  # (N,) the class each sample was explained for
    checks_seconds: dict[str, float] = field(default_factory=dict)  # time of each check beyond completeness

    def __post_init__(self) -> None:
        self.method = self.method or self.name

    def metrics(self) -> dict[str, float]:
        out = {"seconds": float(self.seconds), "samples": float(len(self.attributions))}
        out.update({f"{check}_seconds": float(seconds) for check, seconds in self.checks_seconds.items()})
        if self.completeness is not None:
            out.update(self.completeness.metrics())
        for key, values in self.extras.items():
            if values.ndim != 1:
                continue
            kind = bool if values.dtype == bool else float
            finite = values if kind is bool else values[np.isfinite(values)]
            if len(finite):
                stats = {"fraction": np.mean, "mean": np.mean, "max": np.max, "p95": _p95}
                out.update({f"{key}_{stat}": float(stats[stat](finite)) for stat in summary_stats(kind)})
        return out

    @property
    def verdict(self) -> str:
        """pass / fail on the checks this method has; "n/a" where it has none."""
        if self.completeness is None:
            return "n/a"
        judged = ~self.completeness.degenerate
        if not judged.any():
            return "fail"  # nothing could be judged: never a silent pass
        return "pass" if self.completeness.passed[judged].all() else "fail"

    @property
    def failure_reasons(self) -> list[str]:
        """Why this method's verdict is "fail", one sentence per failed check ([] when it passes)."""
        c = self.completeness
        if c is None:
            return []
        total = len(c.rel_error)
        judged = ~c.degenerate
        if not judged.any():
            return [f"all {total} samples have a degenerate baseline: completeness cannot be judged"]
        failed = int((~c.passed[judged]).sum())
        if not failed:
            return []
        return [
            f"{failed} of {int(judged.sum())} samples above {c.tolerance * 100:g}% completeness error"
            + (f" ({int(c.degenerate.sum())} more with a degenerate baseline)" if c.degenerate.any() else "")
        ]

    def worst_indices(self, k: int) -> np.ndarray:
        """Indices of the (at most) ``k`` samples with the largest completeness error, worst first.

        Samples with a degenerate baseline are left out; a method without the check has none.
        """
        if self.completeness is None or k <= 0:
            return np.empty(0, dtype=np.int64)
        errors = self.completeness.rel_error
        judged = np.flatnonzero(~self.completeness.degenerate)
        ranked = np.nan_to_num(errors[judged], nan=-np.inf, posinf=np.finfo(float).max)
        order = np.argsort(-ranked, kind="stable")
        return judged[order[:k]]


@dataclass
class AuditReport:
    config: AuditConfig
    probe: ProbeSet
    probe_sha256: str
    predictions: np.ndarray
    targets: np.ndarray
    methods: dict[str, MethodResult]
    device: str
    exported_model: bool
    ig_profiles: Any = None  # IGPathProfiles of the first samples, for the convergence figures
    # How the run computed: enough to repeat it and to tell runs apart.
    seed: int = 0  # the audit's torch seed (and the seed of probe sampling)
    dtype: str = "float32"  # dtype of the inputs and of every reported output
    autocast: str | None = None  # precision of gradient passes, when lower than dtype
    tf32: bool = False  # TF32 allowed in CUDA matmuls and convolutions
    oom_splits: dict[str, int] = field(default_factory=dict)  # per method: batch halvings on CUDA OOM
    model_was_training: bool = False  # the model came in train mode; it was audited in eval mode
    randomisation_layers: list[str] = field(default_factory=list)  # lowest layer randomised per stage
    # Image probes with the randomisation check: each result's maps of the first samples at every
    # stage, (stages, samples, *input_shape), for the report's row of maps.
    randomisation_maps: dict[str, np.ndarray] = field(default_factory=dict)
    # gate.seed_runs > 1: each metric's spread over the audits run with shifted seeds.
    seed_spread: dict[str, float] = field(default_factory=dict)
    # Text probes: (N, L) True where a token is left out of rankings (special tokens and padding).
    token_kept: np.ndarray | None = None
    _metrics: dict[str, float] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def compute_dtype(self) -> str:
        """The dtype the model and the attribution paths ran in: the inputs' ``dtype``."""
        return self.dtype

    def metrics(self) -> dict[str, float]:
        """Every metric, named ``xai/<method>/<quantity>_<stat>``, as plain Python floats.

        Computed once (the object-mass fractions read every attribution): the command line, the
        tracking call, ``summary.json`` and ``report.html`` all get copies of the same numbers."""
        if self._metrics is None:
            self._metrics = self._compute_metrics()
        return dict(self._metrics)

    def _compute_metrics(self) -> dict[str, float]:
        out: dict[str, float] = {f"{METRIC_PREFIX}/probe/samples": float(len(self.probe))}
        if self.probe.labels_are_classes:
            accuracy = float((self.predictions == self.probe.labels).mean())
            out[f"{METRIC_PREFIX}/probe/accuracy"] = accuracy
        for name, result in self.methods.items():
            for key, value in result.metrics().items():
                out[f"{METRIC_PREFIX}/{name}/{key}"] = float(value)
            if self.probe.masks is not None:
                mass = object_mass_fraction(result.attributions, self.probe.masks)
                if np.isfinite(mass).any():  # all-zero maps have no mass to place
                    out[f"{METRIC_PREFIX}/{name}/object_mass_fraction_mean"] = float(np.nanmean(mass))
        if self.ig_profiles is not None:
            out[f"{METRIC_PREFIX}/integrated_gradients/figures_seconds"] = float(self.ig_profiles.seconds)
        if self.probe.masks is not None:
            # The share a map that ignores the object would get by chance.
            area = self.probe.masks.reshape(len(self.probe), -1).mean()
            out[f"{METRIC_PREFIX}/probe/object_area_fraction_mean"] = float(area)
        return out

    @property
    def verdict(self) -> str:
        verdicts = [m.verdict for m in self.methods.values() if m.verdict != "n/a"]
        if not verdicts:
            return "unchecked"  # no method has a check: the maps are there to look at
        return "fail" if "fail" in verdicts else "pass"

    def per_sample_rows(self) -> list[dict[str, object]]:
        """One row per probe sample: id, label, prediction, target and each check's result."""
        rows = []
        labels = self.probe.labels
        slots = self.slot_targets()
        tokens = token_text(self.probe) if self.token_kept is not None else None
        for i, sample_id in enumerate(self.probe.ids.tolist()):
            row: dict[str, object] = {
                "id": sample_id,
                "label": "" if labels is None else int(labels[i]),
                "prediction": int(self.predictions[i]),
            }
            if slots:  # several targets: the class each slot explained
                row.update({f"target/{slot}": int(targets[i]) for slot, targets in slots.items()})
            else:
                row["target"] = int(self.targets[i])
            for name, result in self.methods.items():
                c = result.completeness
                if c is None:
                    continue
                row[f"{name}/completeness_rel_error"] = "" if c.degenerate[i] else float(c.rel_error[i])
                row[f"{name}/status"] = (
                    "degenerate_baseline" if c.degenerate[i] else ("pass" if c.passed[i] else "fail")
                )
            if tokens is not None:
                for name, result in self.methods.items():
                    row[f"{name}/top_tokens"] = top_tokens(
                        tokens[i], result.attributions[i].astype(np.float64), self.token_kept[i]
                    )
            for name, result in self.methods.items():
                for key, values in result.extras.items():
                    if values.ndim != 1:
                        continue
                    value = values[i]
                    row[f"{name}/{key}"] = bool(value) if values.dtype == bool else float(value)
            rows.append(row)
        return rows

    def slot_targets(self) -> dict[str, np.ndarray]:
        """In an audit of several targets, each slot's (N,) explained classes; else empty."""
        out: dict[str, np.ndarray] = {}
        for result in self.methods.values():
            if result.target is not None and result.targets is not None:
                out.setdefault(result.target, result.targets)
        return out

    def class_label(self, cls: int) -> str:
        """``"208"``, or ``"208 Labrador retriever"`` where ``class_names`` (or the probe's class
        index) names the class."""
        names = self.config.class_names
        if names is None and self.probe.label_source == CLASS_INDEX:
            names = self.probe.class_names
        name = (names or {}).get(int(cls))
        return str(int(cls)) if name is None else f"{int(cls)} {name}"

    @property
    def failure_reasons(self) -> dict[str, list[str]]:
        """Per method with a failing verdict: why it failed."""
        return {name: r.failure_reasons for name, r in self.methods.items() if r.failure_reasons}

    def class_summary(self) -> list[dict[str, object]]:
        """One row per class: count, accuracy and each checked method's median completeness error.

        Classes are the probe labels where there are labels, else the predicted classes (then
        accuracy is left empty).
        """
        labels = self.probe.labels
        groups = labels if labels is not None else self.predictions
        rows: list[dict[str, object]] = []
        for cls in np.unique(groups).tolist():
            member = groups == cls
            row: dict[str, object] = {"class": int(cls), "count": int(member.sum())}
            row["accuracy"] = (
                float((self.predictions[member] == labels[member]).mean())
                if self.probe.labels_are_classes
                else ""
            )
            for name, result in self.methods.items():
                c = result.completeness
                if c is None:
                    continue
                valid = c.rel_error[member & ~c.degenerate]
                row[f"{name}/completeness_rel_error_median"] = (
                    float(np.median(valid)) if len(valid) else float("nan")
                )
            rows.append(row)
        return rows
