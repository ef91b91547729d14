"""``xai/report.html``: one self-contained page a reviewer reads in the MLflow artifact viewer.

Self-contained means nothing is fetched when it opens: figures are inlined as base64 ``data:`` URIs,
the style sheet is inline, and there are no scripts, web fonts or links to elsewhere. Every string
that comes from the audit (sample ids, method names, config text) is escaped.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from mlflow_xai.artifacts.ig_figures import FIGURES as IG_FIGURES
from mlflow_xai.artifacts.text_view import highlighted_html
from mlflow_xai.report.audit_report import AuditReport
from mlflow_xai.report.faithfulness import faithfulness_sentences, randomisation_verdicts
from mlflow_xai.report.metric_names import METRIC_PREFIX
from mlflow_xai.report.tokens import token_text

REPORT_NAME = "report.html"
WORST_ROWS = 10  # worst samples listed per method in the table beside the figure

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 16px 24px 48px; color: #1d1d1f; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; margin: 0.2em 0; }
h2 { font-size: 1.25em; border-bottom: 2px solid #e3e3e8; padding-bottom: 4px; margin-top: 1.8em; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.4em; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 0.9em; }
th, td { border: 1px solid #d6d6dc; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f3f3f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 10px; font-weight: 600;
         font-size: 0.9em; }
.pass { background: #d8f3dc; color: #1b5e20; } .fail { background: #fde2e1; color: #b71c1c; }
.na { background: #ececf0; color: #555; } .warn { background: #fff3cd; color: #7a5200; }
.overall { font-size: 1.15em; }
figure { margin: 8px 0 18px; } figcaption { color: #555; font-size: 0.85em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.row figure { flex: 1 1 320px; }
pre { background: #f6f6f9; border: 1px solid #e3e3e8; padding: 10px; font-size: 0.85em; overflow-x: auto; }
.muted { color: #666; }
.tok { padding: 1px 3px; border-radius: 3px; line-height: 1.9; } .tok.special { color: #888; }
.text { margin: 4px 0 10px; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; }
nav { font-size: 0.9em; color: #666; }
"""


def write_report_html(report: AuditReport, folder: Path, summary: Mapping[str, Any]) -> Path:
    """Render ``folder/report.html`` from the report and the figures already written to ``folder``."""
    path = Path(folder) / REPORT_NAME
    path.write_text(render_report_html(report, Path(folder), summary), encoding="utf-8")
    return path


def render_report_html(report: AuditReport, folder: Path, summary: Mapping[str, Any]) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # No network, ever: a policy that forbids fetching anything but inline data.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>mlflow-xai audit report</title>",
        f"<style>{_CSS}</style></head><body>",
        _header(report),
        _verdicts(report),
        _gate(summary.get("gate")),
        _faithfulness(report, folder),
        _sanity(report, folder),
        _statistics(report),
        _samples(report, folder),
        _worst(report, folder),
        _features(report, folder),
        _tokens(report),
        _convergence(folder),
        _distributions(folder),
        _per_class(report, folder),
        _provenance(summary["provenance"]),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


# --------------------------------------------------------------------------------------------------
# Sections


def _header(report: AuditReport) -> str:
    methods = ", ".join(report.methods)
    return (
        "<h1>Attribution audit</h1>"
        f'<p class="overall">Verdict: {_badge(report.verdict)} &nbsp; '
        f'<span class="muted">{len(report.probe)} probe samples, methods: {escape(methods)}, '
        f"target: {escape(str(report.config.target))}, output: {escape(report.config.output)}</span></p>"
        + (
            '<p class="muted">The model came in train mode: it was audited in eval mode (BatchNorm '
            "running statistics, no dropout), as it is deployed.</p>"
            if report.model_was_training
            else ""
        )
        + "<nav>Sections: verdicts · statistics · samples · worst samples · convergence · "
        "distributions · per class · provenance</nav>"
    )


def _verdicts(report: AuditReport) -> str:
    reasons = report.failure_reasons
    rows = []
    overall = "; ".join(f"{name}: {r}" for name, rs in reasons.items() for r in rs)
    if report.verdict == "pass":
        overall = "every checked method passed"
    elif report.verdict == "unchecked":
        overall = "unchecked: no method with a check was run; the maps are logged for review"
    rows.append(("<b>overall</b>", _badge(report.verdict), escape(overall)))
    for name, result in report.methods.items():
        if result.verdict == "n/a":
            why = "no completeness check for this method"
        elif result.failure_reasons:
            why = "; ".join(result.failure_reasons)
        else:
            c = result.completeness
            judged = int((~c.degenerate).sum())
            why = f"all {judged} judged samples within {c.tolerance * 100:g}% completeness error"
            if c.degenerate.any():
                why += f" ({int(c.degenerate.sum())} with a degenerate baseline)"
        rows.append((escape(name), _badge(result.verdict), escape(why)))
    return "<h2>Verdicts</h2>" + _table(("", "verdict", "why"), rows, raw=True)


def _gate(gate: Mapping[str, Any] | None) -> str:
    """The CI gate's checks (method checks and thresholds), where the audit was gated."""
    if not gate:
        return ""
    rows = [(escape(c["name"]), _badge(c["level"]), escape(c["message"])) for c in gate["checks"]]
    fail_on = ", ".join(gate["fail_on"])
    return (
        f"<h2>Gate</h2><p>Gate: {_badge(gate['status'])} &nbsp; "
        f'<span class="muted">exit code {int(gate["exit_code"])}; levels that fail the job: '
        f"{escape(fail_on)}</span></p>" + _table(("check", "level", "detail"), rows, raw=True)
    )


def _faithfulness(report: AuditReport, folder: Path) -> str:
    sentences = faithfulness_sentences(report.metrics(), report.methods)
    if not sentences:
        return ""
    rows = [(escape(key), escape(sentence)) for key, sentence in sentences.items()]
    figure = _figure(
        folder / "plots" / "deletion_insertion.png", "mean normalised curves, middle half shaded"
    )
    return (
        "<h2>Faithfulness</h2>"
        '<p class="muted">Deletion and insertion against random rankings (means over the probe set); '
        "the margins are in the statistics below.</p>"
        + _table(("method", "deletion and insertion"), rows, raw=True)
        + figure
    )


def _sanity(report: AuditReport, folder: Path) -> str:
    check = report.config.checks.randomisation
    if check is None:
        return ""
    measure = check.similarity
    cascades = {
        key: r.extras[f"randomisation_cascade_{measure}"]
        for key, r in report.methods.items()
        if f"randomisation_cascade_{measure}" in r.extras
    }
    verdicts = randomisation_verdicts(
        report.metrics(),
        cascades,
        report.randomisation_layers,
        measure=measure,
        max_similarity=check.max_similarity,
        depth=check.depth,
    )
    rows = [(escape(key), _badge(verdict), escape(sentence)) for key, (verdict, sentence) in verdicts.items()]
    figures = [
        _figure(folder / "plots" / "randomisation.png", "similarity to the trained model's maps by stage")
    ]
    figures += [
        _figure(folder / key / "randomisation_cascade.png", f"{key}: the first samples' maps by stage")
        for key in report.randomisation_maps
    ]
    return (
        "<h2>Sanity check: model randomisation</h2>"
        '<p class="muted">Each method explained copies of the model with its layers randomised from the '
        "top down (Adebayo et al. 2018). An explanation of the model changes when its weights do; one "
        "that stays alike reflects the input, not what the model learned.</p>"
        + _table(("method", "verdict", "what happened"), rows, raw=True)
        + "".join(f for f in figures if f)
    )


def _statistics(report: AuditReport) -> str:
    metrics = report.metrics()
    groups: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        _, group, quantity = key.split("/", 2)
        groups.setdefault(group, {})[quantity] = value
    quantities = sorted({q for name in report.methods for q in groups.get(name, {})})
    method_names = list(report.methods)
    rows = [[q, *(_number(groups.get(m, {}).get(q)) for m in method_names)] for q in quantities]
    probe_rows = [[f"{METRIC_PREFIX}/probe/{q}", _number(v)] for q, v in groups.get("probe", {}).items()]
    return (
        "<h2>Statistics</h2>"
        '<p class="muted">Every metric logged to the run; the full name is '
        f"<code>{METRIC_PREFIX}/&lt;method&gt;/&lt;quantity&gt;</code>.</p>"
        + _table(("metric", "value"), probe_rows, numeric_from=1)
        + _table(("quantity", *method_names), rows, numeric_from=1)
    )


def _samples(report: AuditReport, folder: Path) -> str:
    figures = [
        _figure(folder / name / "sheet.png", f"{name}: first probe samples") for name in report.methods
    ]
    figures = [f for f in figures if f]
    if not figures:
        return ""
    acfg = report.config.artifacts
    scale = "per image" if acfg.color_scale is None else f"fixed, bound {acfg.color_scale:g}"
    return (
        "<h2>Samples</h2>"
        f'<p class="muted">Input, heat map (sign mode <code>{escape(acfg.sign)}</code>, colour scale '
        f"{escape(scale)}) and the heat map over the input; ground-truth object outlines in green where "
        "the probe set has masks.</p>" + '<div class="row">' + "".join(figures) + "</div>"
    )


def _worst(report: AuditReport, folder: Path) -> str:
    blocks = []
    for name, result in report.methods.items():
        worst = result.worst_indices(WORST_ROWS)
        if not len(worst):
            continue
        c = result.completeness
        rows = [
            [
                str(report.probe.ids[i]),
                "-" if report.probe.labels is None else str(int(report.probe.labels[i])),
                str(int(report.predictions[i])),
                str(int((report.targets if result.targets is None else result.targets)[i])),
                f"{c.rel_error[i]:.3%}",
                _steps(result, i),
            ]
            for i in worst
        ]
        table = _table(
            ("id", "label", "prediction", "target", "completeness error", "steps"), rows, numeric_from=4
        )
        blocks.append(f"<h3>{escape(name)}</h3>{table}")
        blocks.append(_figure(folder / name / "worst.png", f"{name}: worst samples by completeness error"))
    if not blocks:
        return ""
    return "<h2>Worst samples</h2>" + "".join(b for b in blocks if b)


TEXT_WORST = 3  # worst-completeness samples highlighted per method, below the first samples


def _tokens(report: AuditReport) -> str:
    """Text probes: the first samples' tokens highlighted by each method's scores, then the samples
    with the worst completeness error."""
    if not report.probe.is_text:
        return ""
    probe, acfg = report.probe, report.config.artifacts
    tokens = token_text(probe)
    scale = "per sample" if acfg.color_scale is None else f"fixed, bound {acfg.color_scale:g}"

    def line(result: Any, i: int, note: str = "") -> str:
        label = "" if probe.labels is None else f", label {int(probe.labels[i])}"
        body = highlighted_html(
            tokens[i],
            result.attributions[i].astype(np.float64),
            probe.attention_mask[i],
            report.token_kept[i],
            acfg.color_scale,
        )
        return (
            f'<p class="text"><span class="muted">{escape(str(probe.ids[i]))} (predicted '
            f"{int(report.predictions[i])}{escape(label)}{escape(note)})</span><br>{body}</p>"
        )

    blocks = []
    for name, result in report.methods.items():
        lines = [line(result, i) for i in range(min(acfg.sheet_samples, len(probe)))]
        worst = result.worst_indices(TEXT_WORST)
        if len(worst):
            lines.append('<p class="muted">Worst completeness:</p>')
            lines += [
                line(result, int(i), f", completeness error {result.completeness.rel_error[i]:.3g}")
                for i in worst
            ]
        blocks.append(f"<h3>{escape(name)}</h3>" + "".join(lines))
    return (
        "<h2>Tokens</h2>"
        "<p class=\"muted\">Each token's score is the sum of its attributions over the embedding's "
        "features: red for the explained class, blue against; colour scale "
        f"{escape(scale)}. Special tokens are grey and never ranked; padding is not shown. Hover a "
        "token for its score; every score is in <code>&lt;method&gt;/masks.npz</code>.</p>" + "".join(blocks)
    )


def _features(report: AuditReport, folder: Path) -> str:
    figures = [
        _figure(folder / name / "feature_attributions.png", f"{name}: mean |attribution| per feature")
        for name in report.methods
    ]
    figures = [f for f in figures if f]
    if not figures:
        return ""
    return (
        "<h2>Feature attributions</h2>"
        '<p class="muted">Mean |attribution| per feature over the probe set; every feature is in '
        "<code>&lt;method&gt;/feature_attributions.csv</code>.</p>" + "".join(figures)
    )


def _convergence(folder: Path) -> str:
    figures = [_figure(folder / "integrated_gradients" / name, name) for name in IG_FIGURES]
    figures = [f for f in figures if f]
    if not figures:
        return ""
    return (
        "<h2>Integrated Gradients convergence</h2>"
        '<p class="muted">For the first probe samples: completeness error against gradient '
        "evaluations, the explained output and the gradient magnitude along the path.</p>"
        '<div class="row">' + "".join(figures) + "</div>"
    )


def _distributions(folder: Path) -> str:
    figures = [
        _figure(folder / "plots" / "completeness_error_hist.png", "completeness error per sample"),
        _figure(folder / "plots" / "steps_hist.png", "gradient evaluations per sample"),
    ]
    figures = [f for f in figures if f]
    if not figures:
        return ""
    return "<h2>Distributions</h2>" + '<div class="row">' + "".join(figures) + "</div>"


def _per_class(report: AuditReport, folder: Path) -> str:
    rows = report.class_summary()
    if not rows:
        return ""
    columns = list(rows[0])
    cells = [[_number(row[c]) if isinstance(row[c], float) else str(row[c]) for c in columns] for row in rows]
    grouped = "label" if report.probe.labels is not None else "predicted class (the probe has no labels)"
    return (
        "<h2>Per class</h2>"
        f'<p class="muted">Grouped by {escape(grouped)}.</p>'
        + _table(columns, cells, numeric_from=1)
        + _figure(folder / "plots" / "class_summary.png", "per-class summary")
    )


def _provenance(record: Mapping[str, Any]) -> str:
    rows = [[f"version of {name}", str(v)] for name, v in record["versions"].items()]
    for key in (
        "device",
        "compute_dtype",
        "mask_dtype",
        "seed",
        "tf32_matmul",
        "tf32_cudnn",
        "probe_samples",
        "probe_sha256",
        "exported_model",
    ):
        rows.append([key, str(record[key])])
    return (
        "<h2>Provenance</h2>"
        + _table(("", "value"), rows)
        + "<h3>Config used</h3>"
        + f"<pre>{escape(record['config_yaml'])}</pre>"
    )


# --------------------------------------------------------------------------------------------------
# Building blocks


def _badge(verdict: str) -> str:
    css = {"pass": "pass", "fail": "fail", "warn": "warn"}.get(verdict, "na")
    return f'<span class="badge {css}">{escape(verdict)}</span>'


def _figure(path: Path, caption: str) -> str:
    """An inlined PNG, or "" when the figure was not written."""
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    text = escape(caption)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{text}">'
        f"<figcaption>{text}</figcaption></figure>"
    )


def _table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric_from: int | None = None,
    raw: bool = False,
) -> str:
    """An HTML table; cells are escaped unless ``raw`` (the caller escaped them)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for j, cell in enumerate(row):
            text = cell if raw else escape(cell)
            css = ' class="num"' if numeric_from is not None and j >= numeric_from else ""
            cells.append(f"<td{css}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return "-" if math.isnan(value) else str(value)
    return f"{value:.4g}"


def _steps(result: Any, i: int) -> str:
    steps = result.extras.get("steps")
    return "" if steps is None else f"{float(steps[i]):g}"
