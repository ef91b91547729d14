"""Write an AuditReport to a local folder: the one tree that is then logged under ``xai/``.

Layout (every path relative to ``xai/``)::

    <method>/masks.npz                   all attributions (``attributions``) and the sample ``ids``
    <method>/sheet.png                   images: the first K samples, one panel per artifacts.sheet_columns
    <method>/worst.png                   images, methods with a completeness check: the K worst samples
    <method>/feature_attributions.csv    tabular probes: mean |attribution| per feature
    <method>/feature_attributions.png    tabular probes: the top features as bars
    integrated_gradients/ig_*.png        IG convergence figures of the first samples
    plots/completeness_error_hist.png    completeness error per sample (log x), every checked method
    plots/steps_hist.png                 gradient evaluations per sample, where a method reports steps
    plots/class_summary.png              per class: count, accuracy, median completeness error
    plots/deletion_insertion.png         checks.deletion_insertion: mean curves against random rankings
    plots/randomisation.png              checks.randomisation: similarity to the trained maps by layer
    <method>/randomisation_cascade.png   images, checks.randomisation: the first samples' maps by stage
    <method>/tokens.png                  text: the first samples' tokens coloured by their scores
    summary.json, per_sample.csv, config.yaml, report.html
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from mlflow_xai._version import __version__
from mlflow_xai.artifacts.faithfulness_plots import (
    cascade_maps_figure,
    deletion_insertion_figure,
    randomisation_figure,
)
from mlflow_xai.artifacts.ig_figures import ig_convergence_figures
from mlflow_xai.artifacts.provenance import provenance
from mlflow_xai.artifacts.report_html import write_report_html
from mlflow_xai.artifacts.review_plots import class_summary_figure, completeness_histogram, steps_histogram
from mlflow_xai.artifacts.text_view import text_figure
from mlflow_xai.artifacts.viz import (
    ImageDisplay,
    attribution_sheet,
    feature_bar_chart,
    feature_importance,
    finite_range,
    is_image_shape,
    is_tabular_shape,
)
from mlflow_xai.checks.randomisation import verdict_stage
from mlflow_xai.config.loading import dump_config
from mlflow_xai.config.sections import check_display_channels
from mlflow_xai.report.audit_report import AuditReport, MethodResult
from mlflow_xai.report.tokens import token_text

_log = logging.getLogger(__name__)

#: A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula, with a leading ``'`` so it shows as
    text; everything else unchanged. Only the CSV files do this: summary.json, masks.npz and the
    HTML report keep ids as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_artifacts(report: AuditReport, folder: str | Path, *, gate: Any = None) -> Path:
    """Fill ``folder`` with masks, figures, summary.json, per_sample.csv, config.yaml and report.html.

    ``gate`` (a ``GateResult``) adds the gate's checks to summary.json and the report.
    """
    folder = Path(folder)
    probe = report.probe
    # Resolved before anything is written: a display that does not fit the probe fails up front.
    display = image_display(report) if is_image_shape(probe.input_shape) else None
    folder.mkdir(parents=True, exist_ok=True)
    for name, result in report.methods.items():
        method_dir = folder / name  # <method>/<slot> in an audit of several targets
        method_dir.mkdir(parents=True, exist_ok=True)
        if probe.is_text:
            _text_artifacts(report, name, result, method_dir)
            continue
        np.savez_compressed(
            method_dir / "masks.npz", attributions=result.attributions, ids=probe.ids.astype(str)
        )
        if display is not None:
            _image_sheets(report, name, method_dir, display)
        elif is_tabular_shape(probe.input_shape):
            _feature_attributions(report, name, method_dir)
    if report.ig_profiles is not None:
        ig_convergence_figures(
            report.ig_profiles,
            folder / "integrated_gradients",
            completeness_tolerance=report.config.checks.completeness.tolerance,
            output_label=f"{report.config.output} of the target class",
        )
    _summary_plots(report, folder / "plots")
    rows = report.per_sample_rows()
    with open(folder / "per_sample.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({key: spreadsheet_safe(value) for key, value in row.items()} for row in rows)
    summary = summary_dict(report)
    if gate is not None:
        summary["gate"] = gate.to_dict()
    (folder / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (folder / "config.yaml").write_text(dump_config(report.config), encoding="utf-8")
    write_report_html(report, folder, summary)
    return folder


def _text_artifacts(report: AuditReport, name: str, result: MethodResult, method_dir: Path) -> None:
    """masks.npz: the (N, L) scores with the token ids, the attention mask and the tokens beside
    them; tokens.png: the first samples' tokens coloured by their scores."""
    probe = report.probe
    tokens = token_text(probe)
    np.savez_compressed(
        method_dir / "masks.npz",
        attributions=result.attributions,
        ids=probe.ids.astype(str),
        input_ids=probe.inputs,
        attention_mask=probe.attention_mask,
        tokens=tokens,
    )
    shown = min(report.config.artifacts.sheet_samples, len(probe))
    if shown:
        text_figure(
            tokens[:shown],
            result.attributions[:shown].astype(np.float64),
            probe.attention_mask[:shown],
            report.token_kept[:shown],
            method_dir / "tokens.png",
            title=f"{name}: token attributions of the first samples",
            fixed=report.config.artifacts.color_scale,
        )


def summary_dict(report: AuditReport) -> dict[str, Any]:
    """Every metric and verdict, the reasons for each failure, the per-class summary, provenance."""
    probe = report.probe
    return {
        "mlflow_xai_version": __version__,
        "verdict": report.verdict,
        "methods": {name: r.verdict for name, r in report.methods.items()},
        "failure_reasons": report.failure_reasons,
        "metrics": report.metrics(),
        "per_class": [{k: _json_number(v) for k, v in row.items()} for row in report.class_summary()],
        "probe": {"samples": len(probe), "sha256": report.probe_sha256},
        "device": report.device,
        "exported_model": report.exported_model,
        "model_mode": "eval (the model came in train mode)" if report.model_was_training else "eval",
        "seed_spread": report.seed_spread,  # gate.seed_runs > 1: each metric's spread over seeds
        "provenance": provenance(report),
    }


def _json_number(value: object) -> object:
    """NaN is not JSON: a class with no judged sample gets null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def image_display(report: AuditReport) -> ImageDisplay:
    """The one map from the probe's inputs to the colours of every sheet, as ``artifacts.display`` says
    (``ArtifactsConfig`` lists the settings and when the default falls back to a min-max stretch)."""
    setting = report.config.artifacts.display
    preprocess = report.config.probe.preprocess
    if isinstance(setting, dict):
        return _unnormalized(report, setting["mean"], setting["std"], "artifacts.display")
    if setting == "none":
        return ImageDisplay.as_is("as given, clipped to [0, 1] (artifacts.display: none)")
    if setting == "minmax":
        return ImageDisplay.stretch(*finite_range(report.probe.inputs), over="the probe set")
    if preprocess is not None and preprocess.mean is not None:
        return _unnormalized(report, preprocess.mean, preprocess.std, "probe.preprocess")
    lo, hi = finite_range(report.probe.inputs)
    if not (0.0 <= lo and hi <= 1.0):
        _log.warning(
            "probe inputs lie in [%.4g, %.4g], outside [0, 1], and their normalisation is unknown: the "
            "sheets stretch them with one min-max over the probe set; set artifacts.display to the "
            "probe's {mean, std} to show the images in their own colours",
            lo,
            hi,
        )
    note = "; the probe's normalisation is unknown: set artifacts.display"
    return ImageDisplay.for_range(lo, hi, over="the probe set", note=note)


def _unnormalized(report: AuditReport, mean: list[float], std: list[float], source: str) -> ImageDisplay:
    """Undo ``source``'s mean/std, refused when they do not fit the probe's channels."""
    shape = report.probe.input_shape
    check_display_channels(mean, shape[0] if len(shape) == 3 else 1, source)
    return ImageDisplay.unnormalize(mean, std, source=source)


def _image_sheets(report: AuditReport, name: str, method_dir: Path, display: ImageDisplay) -> None:
    probe, acfg = report.probe, report.config.artifacts
    result = report.methods[name]
    k = min(acfg.sheet_samples, len(probe))
    if not k:
        return
    style = {
        "sign": acfg.sign,
        "color_scale": acfg.color_scale,
        "columns": acfg.sheet_columns,
        "outlier_perc": acfg.outlier_perc,
        "display": display,
    }
    masks = probe.masks
    first = np.arange(k)
    attribution_sheet(
        probe.inputs[:k],
        result.attributions[:k],
        method_dir / "sheet.png",
        title=f"{result.method}: first {k} probe samples, {_target_title(report, result)}",
        captions=[_caption(report, result, i) for i in first],
        masks=None if masks is None else masks[:k],
        **style,
    )
    worst = result.worst_indices(k)
    if len(worst):
        rel_error = result.completeness.rel_error
        attribution_sheet(
            probe.inputs[worst],
            result.attributions[worst],
            method_dir / "worst.png",
            title=f"{result.method}: {len(worst)} worst samples by completeness error, "
            f"{_target_title(report, result)}",
            captions=[f"{_caption(report, result, i)}\nerror {rel_error[i]:.2%}" for i in worst],
            masks=None if masks is None else masks[worst],
            **style,
        )


def feature_names(report: AuditReport) -> list[str]:
    """The probe set's feature names, or f0 .. f(F-1)."""
    names = getattr(report.probe, "feature_names", None)
    count = report.probe.input_shape[0]
    return [str(n) for n in names] if names is not None else [f"f{i}" for i in range(count)]


def _feature_attributions(report: AuditReport, name: str, method_dir: Path) -> None:
    attributions = report.methods[name].attributions
    names = feature_names(report)
    importance = feature_importance(attributions)
    signed = np.zeros(len(names))
    for start in range(0, len(attributions), 4096):
        signed += attributions[start : start + 4096].astype(np.float64).sum(axis=0)
    signed /= max(len(attributions), 1)
    order = np.argsort(-importance, kind="stable")
    with open(method_dir / "feature_attributions.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "feature", "mean_abs_attribution", "mean_attribution"])
        for rank, i in enumerate(order, start=1):
            writer.writerow([rank, spreadsheet_safe(names[i]), float(importance[i]), float(signed[i])])
    top = report.config.artifacts.feature_bars
    feature_bar_chart(
        names,
        importance,
        method_dir / "feature_attributions.png",
        title=f"{name}: top {min(top, len(names))} features by mean |attribution|",
        top=top,
    )


def _summary_plots(report: AuditReport, plots_dir: Path) -> None:
    plots_dir.mkdir(exist_ok=True)
    errors = {
        name: r.completeness.rel_error[~r.completeness.degenerate]
        for name, r in report.methods.items()
        if r.completeness is not None
    }
    if errors:
        completeness_histogram(
            errors,
            plots_dir / "completeness_error_hist.png",
            tolerance=report.config.checks.completeness.tolerance,
        )
    steps = {name: r.extras["steps"] for name, r in report.methods.items() if "steps" in r.extras}
    if steps:
        steps_histogram(steps, plots_dir / "steps_hist.png")
    class_summary_figure(report.class_summary(), plots_dir / "class_summary.png")
    deletion_insertion_figure(
        {name: r.extras for name, r in report.methods.items()}, plots_dir / "deletion_insertion.png"
    )
    check = report.config.checks.randomisation
    if check is not None:
        cascades = {
            name: r.extras[f"randomisation_cascade_{check.similarity}"]
            for name, r in report.methods.items()
            if f"randomisation_cascade_{check.similarity}" in r.extras
        }
        randomisation_figure(
            cascades,
            report.randomisation_layers,
            plots_dir / "randomisation.png",
            measure=check.similarity,
            max_similarity=check.max_similarity,
            verdict_stage=verdict_stage(len(report.randomisation_layers), check.depth),
        )
        for name, stages in report.randomisation_maps.items():
            cascade_maps_figure(
                report.methods[name].attributions[: stages.shape[1]],
                stages,
                report.randomisation_layers,
                plots_dir.parent / name / "randomisation_cascade.png",
                title=f"{name}: maps as the layers are randomised from the top down",
            )


def _fixed_class(report: AuditReport, result: MethodResult) -> int | None:
    """The class ``result`` explains for every sample (``target: 208`` or ``class_208`` of several),
    or None where the class is per sample (predicted, label, top k)."""
    if result.target is not None:
        return int(result.target.removeprefix("class_")) if result.target.startswith("class_") else None
    spec = report.config.target
    return int(spec) if type(spec) is int else None


def _target_title(report: AuditReport, result: MethodResult) -> str:
    """What a sheet explains: ``target class 208 Labrador retriever``, ``target predicted``,
    ``target top2``."""
    fixed = _fixed_class(report, result)
    if fixed is not None:
        return f"target class {report.class_label(fixed)}"
    return f"target {result.target or report.config.target}"


def _caption(report: AuditReport, result: MethodResult, i: int) -> str:
    """Id, label and prediction of sample ``i``, and the class explained where it is per sample."""
    probe = report.probe
    label = "-" if probe.labels is None else report.class_label(int(probe.labels[i]))
    lines = [str(probe.ids[i]), f"label {label} pred {report.class_label(int(report.predictions[i]))}"]
    per_sample = _fixed_class(report, result) is None and result.targets is not None
    if per_sample and int(result.targets[i]) != int(report.predictions[i]):
        lines.append(f"explains {report.class_label(int(result.targets[i]))}")
    return "\n".join(lines)
