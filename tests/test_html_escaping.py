"""report.html: every string that comes from the audit reaches the page escaped, and each section renders
the HTML written out here by hand.

The hostile strings go in through a real AuditReport (built directly, no model run) for the whole page,
and through small stand-ins for the sections and building blocks.
"""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mlflow_xai import report_html as rh
from mlflow_xai.checks import CompletenessResult
from mlflow_xai.config import load_config
from mlflow_xai.probe import ProbeSet
from mlflow_xai.report import AuditReport, MethodResult

SCRIPT = "<script>alert(1)</script>"
SCRIPT_ESC = "&lt;script&gt;alert(1)&lt;/script&gt;"
ATTR = '"onload="x'
ATTR_ESC = "&quot;onload=&quot;x"
AMP = "&amp;"
AMP_ESC = "&amp;amp;"
QUOTE = "it's"
QUOTE_ESC = "it&#x27;s"
METHOD = '<img src=x onerror="alert(1)">'  # a method name (no "/": it is a directory name too)
METHOD_ESC = "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"
PNG = b"abc"  # the page inlines the bytes as they are; base64 of b"abc" is YWJj
PNG_B64 = "YWJj"


def _figure_html(caption_esc: str) -> str:
    return (
        f'<figure><img src="data:image/png;base64,{PNG_B64}" alt="{caption_esc}">'
        f"<figcaption>{caption_esc}</figcaption></figure>"
    )


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PNG)


# --------------------------------------------------------------------------------------------------
# The whole page, from a real AuditReport full of hostile strings


def _hostile_report(tmp_path: Path) -> tuple[AuditReport, Path, dict]:
    probe = ProbeSet(
        np.zeros((4, 3), dtype=np.float32),
        labels=np.array([0, 1, 1, 0]),
        ids=np.array([SCRIPT, ATTR, "plain", AMP]),
    )
    completeness = CompletenessResult(
        rel_error=np.array([0.5, 0.001, np.nan, 0.02]),
        output_gap=np.array([1.0, 1.0, 0.0, 1.0]),
        degenerate=np.array([False, False, True, False]),
        tolerance=0.01,
    )
    zeros = np.zeros((4, 3), dtype=np.float32)
    methods = {
        METHOD: MethodResult(METHOD, zeros, 1.5, completeness, {"steps": np.array([4.0, 8.0, 16.0, 32.0])}),
        "occlusion": MethodResult("occlusion", zeros, 0.25),
    }
    config = load_config({"methods": {"integrated_gradients": {}}})
    artifacts = config.artifacts.model_copy(update={"sign": AMP})
    config = config.model_copy(update={"target": ATTR, "output": SCRIPT, "artifacts": artifacts})
    report = AuditReport(
        config=config,
        probe=probe,
        probe_sha256=QUOTE,
        predictions=np.array([0, 1, 0, 0]),
        targets=np.array([0, 1, 0, 0]),
        methods=methods,
        device="cpu",
        exported_model=False,
    )
    summary = {
        "gate": {
            "status": SCRIPT,
            "exit_code": 1,
            "fail_on": [ATTR],
            "checks": [{"name": METHOD, "level": AMP, "message": SCRIPT + QUOTE}],
        },
        "provenance": {
            "versions": {SCRIPT: ATTR},
            "device": SCRIPT,
            "compute_dtype": ATTR,
            "mask_dtype": AMP,
            "seed": QUOTE,
            "tf32_matmul": False,
            "tf32_cudnn": True,
            "probe_samples": 4,
            "probe_sha256": SCRIPT,
            "exported_model": AMP,
            "config_yaml": f"output: {SCRIPT}\ntarget: {ATTR}\n",
        },
    }
    folder = tmp_path / "xai"
    for figure in ("sheet.png", "worst.png", "feature_attributions.png"):
        _png(folder / METHOD / figure)
    _png(folder / "plots" / "class_summary.png")
    return report, folder, summary


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "span", "nav", "b", "code",
    "pre", "table", "thead", "tbody", "tr", "th", "td", "figure", "img", "figcaption", "div",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"lang", "charset", "http-equiv", "content", "name", "class", "src", "alt"}


def test_hostile_strings_are_text_never_markup(tmp_path):
    report, folder, summary = _hostile_report(tmp_path)
    html = rh.render_report_html(report, folder, summary)
    page = _Page()
    page.feed(html)
    assert {tag for tag, _ in page.tags} <= ALLOWED_TAGS
    assert {name for _, attrs in page.tags for name in attrs} <= ALLOWED_ATTRIBUTES
    for raw in (SCRIPT, ATTR, METHOD, 'onerror="', "<img src=x"):
        assert raw not in html
    # Read back as a browser reads it, every hostile string is there, as the text it was.
    text = "".join(page.text)
    for raw in (SCRIPT, ATTR, AMP, QUOTE, METHOD):
        assert raw in text
    alts = [attrs["alt"] for tag, attrs in page.tags if tag == "img"]
    assert f"{METHOD}: first probe samples" in alts


def test_hostile_strings_escaped_where_shown(tmp_path):
    report, folder, summary = _hostile_report(tmp_path)
    html = rh.render_report_html(report, folder, summary)
    expected = [
        # header: method names, target and output from the config
        f"methods: {METHOD_ESC}, occlusion, target: {ATTR_ESC}, output: {SCRIPT_ESC}</span>",
        # verdicts: the method's row
        f'<tr><td>{METHOD_ESC}</td><td><span class="badge fail">fail</span></td>',
        # gate: status, check name, level, message and fail_on
        f'Gate: <span class="badge na">{SCRIPT_ESC}</span>',
        f"levels that fail the job: {ATTR_ESC}</span>",
        f'<tr><td>{METHOD_ESC}</td><td><span class="badge na">{AMP_ESC}</span></td>'
        f"<td>{SCRIPT_ESC}{QUOTE_ESC}</td></tr>",
        # statistics: the method as a column
        f"<th>quantity</th><th>{METHOD_ESC}</th><th>occlusion</th>",
        # samples: the sign mode from the config, the figure's caption in alt and figcaption
        f"sign mode <code>{AMP_ESC}</code>",
        _figure_html(f"{METHOD_ESC}: first probe samples"),
        # worst samples: the sample ids, worst first (the degenerate "plain" is not judged)
        f"<h3>{METHOD_ESC}</h3>",
        f'<tr><td>{SCRIPT_ESC}</td><td>0</td><td>0</td><td>0</td><td class="num">50.000%</td>'
        '<td class="num">4</td></tr>'
        f'<tr><td>{AMP_ESC}</td><td>0</td><td>0</td><td>0</td><td class="num">2.000%</td>'
        '<td class="num">32</td></tr>'
        f'<tr><td>{ATTR_ESC}</td><td>1</td><td>1</td><td>1</td><td class="num">0.100%</td>'
        '<td class="num">8</td></tr></tbody></table>',
        _figure_html(f"{METHOD_ESC}: worst samples by completeness error"),
        _figure_html(f"{METHOD_ESC}: mean |attribution| per feature"),
        # per class: the method's column
        f"<th>{METHOD_ESC}/completeness_rel_error_median</th>",
        # provenance: versions, values and the config text
        f"<tr><td>version of {SCRIPT_ESC}</td><td>{ATTR_ESC}</td></tr>",
        f"<tr><td>device</td><td>{SCRIPT_ESC}</td></tr><tr><td>compute_dtype</td><td>{ATTR_ESC}</td></tr>"
        f"<tr><td>mask_dtype</td><td>{AMP_ESC}</td></tr><tr><td>seed</td><td>{QUOTE_ESC}</td></tr>",
        f"<tr><td>probe_sha256</td><td>{SCRIPT_ESC}</td></tr><tr><td>exported_model</td><td>{AMP_ESC}</td></tr>",
        f"<pre>output: {SCRIPT_ESC}\ntarget: {ATTR_ESC}\n</pre>",
    ]
    for fragment in expected:
        assert fragment in html, fragment


def test_write_report_html(tmp_path):
    report, folder, summary = _hostile_report(tmp_path)
    path = rh.write_report_html(report, folder, summary)
    assert path == folder / "report.html"
    assert path.read_bytes().decode("utf-8") == rh.render_report_html(report, folder, summary)


def test_page_frame_and_section_order(tmp_path):
    report, folder, summary = _hostile_report(tmp_path)
    html = rh.render_report_html(report, folder, summary)
    lines = html.split("\n")
    assert lines[:5] == [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>mlflow-xai audit report</title>",
    ]
    assert lines[5].startswith("<style>") and lines[-1] == "</body></html>"
    assert "</style></head><body>" in html
    headings = [
        "<h1>Attribution audit</h1>",
        "<h2>Verdicts</h2>",
        "<h2>Gate</h2>",
        "<h2>Statistics</h2>",
        "<h2>Samples</h2>",
        "<h2>Worst samples</h2>",
        "<h2>Feature attributions</h2>",
        "<h2>Per class</h2>",
        "<h2>Provenance</h2>",
    ]
    assert [html.index(h) for h in headings] == sorted(html.index(h) for h in headings)
    for absent in ("<h2>Integrated Gradients convergence</h2>", "<h2>Distributions</h2>", "\n\n"):
        assert absent not in html  # no figures for them; empty sections leave no blank line
    without_gate = rh.render_report_html(report, folder, {"provenance": summary["provenance"]})
    assert "<h2>Gate</h2>" not in without_gate
    assert without_gate == html.replace("\n" + rh._gate(summary["gate"]), "")


# --------------------------------------------------------------------------------------------------
# Building blocks


@pytest.mark.parametrize(
    ("verdict", "html"),
    [
        ("pass", '<span class="badge pass">pass</span>'),
        ("fail", '<span class="badge fail">fail</span>'),
        ("warn", '<span class="badge warn">warn</span>'),
        ("n/a", '<span class="badge na">n/a</span>'),
        ("unchecked", '<span class="badge na">unchecked</span>'),
        (SCRIPT, f'<span class="badge na">{SCRIPT_ESC}</span>'),
        (ATTR, f'<span class="badge na">{ATTR_ESC}</span>'),
    ],
)
def test_badge(verdict, html):
    assert rh._badge(verdict) == html


def test_table_escapes_header_and_cells():
    html = rh._table((SCRIPT, "b"), [["1", ATTR], [AMP, QUOTE]])
    assert html == (
        f"<table><thead><tr><th>{SCRIPT_ESC}</th><th>b</th></tr></thead><tbody>"
        f"<tr><td>1</td><td>{ATTR_ESC}</td></tr><tr><td>{AMP_ESC}</td><td>{QUOTE_ESC}</td></tr>"
        "</tbody></table>"
    )


def test_table_raw_cells_are_the_callers_own_markup():
    html = rh._table(("<h>",), [["<b>x</b>"]], raw=True)
    head = "<table><thead><tr><th>&lt;h&gt;</th></tr></thead>"
    assert html == head + "<tbody><tr><td><b>x</b></td></tr></tbody></table>"


@pytest.mark.parametrize(
    ("numeric_from", "cells"),
    [
        (None, "<td>a</td><td>b</td><td>c</td>"),
        (0, '<td class="num">a</td><td class="num">b</td><td class="num">c</td>'),
        (1, '<td>a</td><td class="num">b</td><td class="num">c</td>'),
        (2, '<td>a</td><td>b</td><td class="num">c</td>'),
        (3, "<td>a</td><td>b</td><td>c</td>"),
    ],
)
def test_table_numeric_columns(numeric_from, cells):
    html = rh._table(("x", "y", "z"), [["a", "b", "c"]], numeric_from=numeric_from)
    assert html == (
        "<table><thead><tr><th>x</th><th>y</th><th>z</th></tr></thead>"
        f"<tbody><tr>{cells}</tr></tbody></table>"
    )


def test_table_without_rows():
    assert rh._table(("x",), []) == "<table><thead><tr><th>x</th></tr></thead><tbody></tbody></table>"


def test_figure(tmp_path):
    assert rh._figure(tmp_path / "missing.png", "caption") == ""
    (tmp_path / "folder.png").mkdir()
    assert rh._figure(tmp_path / "folder.png", "caption") == ""  # a directory is not a figure
    _png(tmp_path / "f.png")
    assert rh._figure(tmp_path / "f.png", f"{METHOD}: {QUOTE}") == _figure_html(f"{METHOD_ESC}: {QUOTE_ESC}")
    (tmp_path / "g.png").write_bytes(bytes([0xFF, 0xFE, 0x00]))
    assert rh._figure(tmp_path / "g.png", "c") == (
        '<figure><img src="data:image/png;base64,//4A" alt="c"><figcaption>c</figcaption></figure>'
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (math.nan, "-"),
        (np.float64("nan"), "-"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (1234.5678, "1235"),
        (0.000123456, "0.0001235"),
        (2.0, "2"),
        (3, "3"),
        (0.5, "0.5"),
        (-12.5, "-12.5"),
        (123456.0, "1.235e+05"),
    ],
)
def test_number(value, text):
    assert rh._number(value) == text


def test_steps():
    assert rh._steps(SimpleNamespace(extras={}), 0) == ""
    result = SimpleNamespace(extras={"steps": np.array([4.0, 2.5, 100000.0])})
    assert [rh._steps(result, i) for i in range(3)] == ["4", "2.5", "100000"]


# --------------------------------------------------------------------------------------------------
# Sections, from stand-ins that carry just what each one reads


def _config(target="predicted", output="logit", sign="all", color_scale=None):
    artifacts = SimpleNamespace(sign=sign, color_scale=color_scale)
    return SimpleNamespace(target=target, output=output, artifacts=artifacts)


TRAIN_MODE_NOTE = (
    '<p class="muted">The model came in train mode: it was audited in eval mode (BatchNorm running '
    "statistics, no dropout), as it is deployed.</p>"
)


@pytest.mark.parametrize("was_training", [False, True])
def test_header(was_training):
    report = SimpleNamespace(
        methods={METHOD: None, "saliency": None},
        verdict="pass",
        probe=[0] * 7,
        config=_config(target=3, output=SCRIPT),
        model_was_training=was_training,
    )
    assert rh._header(report) == (
        "<h1>Attribution audit</h1>"
        '<p class="overall">Verdict: <span class="badge pass">pass</span> &nbsp; '
        f'<span class="muted">7 probe samples, methods: {METHOD_ESC}, saliency, '
        f"target: 3, output: {SCRIPT_ESC}</span></p>"
        + (TRAIN_MODE_NOTE if was_training else "")
        + "<nav>Sections: verdicts · statistics · samples · worst samples · convergence · "
        "distributions · per class · provenance</nav>"
    )


def _method(verdict, reasons=(), degenerate=(), tolerance=0.01):
    completeness = SimpleNamespace(degenerate=np.array(degenerate, dtype=bool), tolerance=tolerance)
    return SimpleNamespace(verdict=verdict, failure_reasons=list(reasons), completeness=completeness)


VERDICTS_HEAD = "<h2>Verdicts</h2><table><thead><tr><th></th><th>verdict</th><th>why</th></tr></thead><tbody>"


def _badge(level, css=None):
    return f'<span class="badge {css or level}">{level}</span>'


def test_verdicts_failing():
    report = SimpleNamespace(
        verdict="fail",
        failure_reasons={METHOD: [f"2 of 3 samples {SCRIPT}"], "b": ["x", "y"]},
        methods={
            METHOD: _method("fail", [f"2 of 3 samples {SCRIPT}"]),
            "b": _method("fail", ["x", "y"]),
            "c": _method("n/a"),
        },
    )
    assert rh._verdicts(report) == (
        VERDICTS_HEAD + f"<tr><td><b>overall</b></td><td>{_badge('fail')}</td>"
        f"<td>{METHOD_ESC}: 2 of 3 samples {SCRIPT_ESC}; b: x; b: y</td></tr>"
        f"<tr><td>{METHOD_ESC}</td><td>{_badge('fail')}</td><td>2 of 3 samples {SCRIPT_ESC}</td></tr>"
        f"<tr><td>b</td><td>{_badge('fail')}</td><td>x; y</td></tr>"
        f"<tr><td>c</td><td>{_badge('n/a', 'na')}</td><td>no completeness check for this method</td></tr>"
        "</tbody></table>"
    )


def test_verdicts_passing():
    report = SimpleNamespace(
        verdict="pass",
        failure_reasons={},
        methods={
            "a": _method("pass", degenerate=[False, True, False, True, True], tolerance=0.005),
            "b": _method("pass", degenerate=[False, False], tolerance=0.01),
        },
    )
    assert rh._verdicts(report) == (
        VERDICTS_HEAD
        + f"<tr><td><b>overall</b></td><td>{_badge('pass')}</td><td>every checked method passed</td></tr>"
        f"<tr><td>a</td><td>{_badge('pass')}</td>"
        "<td>all 2 judged samples within 0.5% completeness error (3 with a degenerate baseline)</td></tr>"
        f"<tr><td>b</td><td>{_badge('pass')}</td>"
        "<td>all 2 judged samples within 1% completeness error</td></tr>"
        "</tbody></table>"
    )


def test_verdicts_unchecked():
    report = SimpleNamespace(verdict="unchecked", failure_reasons={}, methods={"occlusion": _method("n/a")})
    assert rh._verdicts(report) == (
        VERDICTS_HEAD + f"<tr><td><b>overall</b></td><td>{_badge('unchecked', 'na')}</td>"
        "<td>unchecked: no method with a check was run; the maps are logged for review</td></tr>"
        f"<tr><td>occlusion</td><td>{_badge('n/a', 'na')}</td>"
        "<td>no completeness check for this method</td></tr>"
        "</tbody></table>"
    )


def test_gate_section():
    assert rh._gate(None) == "" and rh._gate({}) == ""
    gate = {
        "status": "warn",
        "exit_code": 0.0,
        "fail_on": ["fail", ATTR],
        "checks": [
            {"name": "a.completeness", "level": "pass", "message": "all 3 samples"},
            {"name": METHOD, "level": "warn", "message": f"{SCRIPT} | {QUOTE}"},
        ],
    }
    assert rh._gate(gate) == (
        f"<h2>Gate</h2><p>Gate: {_badge('warn')} &nbsp; "
        f'<span class="muted">exit code 0; levels that fail the job: fail, {ATTR_ESC}</span></p>'
        "<table><thead><tr><th>check</th><th>level</th><th>detail</th></tr></thead><tbody>"
        f"<tr><td>a.completeness</td><td>{_badge('pass')}</td><td>all 3 samples</td></tr>"
        f"<tr><td>{METHOD_ESC}</td><td>{_badge('warn')}</td><td>{SCRIPT_ESC} | {QUOTE_ESC}</td></tr>"
        "</tbody></table>"
    )


def test_statistics():
    metrics = {  # "c" is listed but produced nothing: an empty column
        "xai/probe/samples": 4.0,
        "xai/probe/accuracy": 0.75,
        "xai/b/seconds": 0.25,
        METHOD.join(["xai/", "/seconds"]): 1.5,
        METHOD.join(["xai/", "/completeness_rel_error_max"]): math.nan,
        "xai/b/steps_p95": 29.6,
        "xai/unlisted/seconds": 9.0,  # a group that is neither the probe nor a listed method
    }
    report = SimpleNamespace(metrics=lambda: metrics, methods={METHOD: None, "b": None, "c": None})
    assert rh._statistics(report) == (
        "<h2>Statistics</h2>"
        '<p class="muted">Every metric logged to the run; the full name is '
        "<code>xai/&lt;method&gt;/&lt;quantity&gt;</code>.</p>"
        "<table><thead><tr><th>metric</th><th>value</th></tr></thead><tbody>"
        '<tr><td>xai/probe/samples</td><td class="num">4</td></tr>'
        '<tr><td>xai/probe/accuracy</td><td class="num">0.75</td></tr>'
        "</tbody></table>"
        f"<table><thead><tr><th>quantity</th><th>{METHOD_ESC}</th><th>b</th><th>c</th></tr></thead><tbody>"
        '<tr><td>completeness_rel_error_max</td><td class="num">-</td><td class="num"></td>'
        '<td class="num"></td></tr>'
        '<tr><td>seconds</td><td class="num">1.5</td><td class="num">0.25</td><td class="num"></td></tr>'
        '<tr><td>steps_p95</td><td class="num"></td><td class="num">29.6</td><td class="num"></td></tr>'
        "</tbody></table>"
    )


def test_statistics_without_probe_metrics():
    report = SimpleNamespace(metrics=lambda: {"xai/a/x/y": 2.0}, methods={"a": None})
    assert rh._statistics(report).endswith(
        "<table><thead><tr><th>metric</th><th>value</th></tr></thead><tbody></tbody></table>"
        "<table><thead><tr><th>quantity</th><th>a</th></tr></thead><tbody>"
        '<tr><td>x/y</td><td class="num">2</td></tr></tbody></table>'
    )


SAMPLES_TEXT = (
    "<h2>Samples</h2>"
    '<p class="muted">Input, heat map (sign mode <code>{sign}</code>, colour scale {scale}) and the heat '
    "map over the input; ground-truth object outlines in green where the probe set has masks.</p>"
    '<div class="row">{figures}</div>'
)


@pytest.mark.parametrize(
    ("sign", "color_scale", "sign_html", "scale_html"),
    [
        ("all", None, "all", "per image"),
        ("absolute_value", 0.5, "absolute_value", "fixed, bound 0.5"),
        (SCRIPT, 1e-05, SCRIPT_ESC, "fixed, bound 1e-05"),
    ],
)
def test_samples(tmp_path, sign, color_scale, sign_html, scale_html):
    _png(tmp_path / METHOD / "sheet.png")
    _png(tmp_path / "c" / "sheet.png")
    report = SimpleNamespace(
        methods={METHOD: None, "b": None, "c": None}, config=_config(sign=sign, color_scale=color_scale)
    )
    figures = _figure_html(f"{METHOD_ESC}: first probe samples") + _figure_html("c: first probe samples")
    assert rh._samples(report, tmp_path) == SAMPLES_TEXT.format(
        sign=sign_html, scale=scale_html, figures=figures
    )


def test_samples_without_sheets(tmp_path):
    report = SimpleNamespace(methods={"a": None}, config=_config())
    assert rh._samples(report, tmp_path) == ""


class _Result(SimpleNamespace):
    targets = None  # an audit of one target: the report's targets

    def worst_indices(self, k):
        return np.asarray(self.worst[:k], dtype=np.int64)


def _worst_report(labels):
    rel_error = np.array([0.5, 0.001, 0.02, 0.123456])
    a = _Result(worst=[0, 3, 2], completeness=SimpleNamespace(rel_error=rel_error), extras={})
    b = _Result(worst=[], completeness=None, extras={})
    many = _Result(
        worst=list(range(12)),
        completeness=SimpleNamespace(rel_error=np.linspace(0.0, 1.1, 12)),
        extras={"steps": np.arange(12.0) * 2},
    )
    probe = SimpleNamespace(
        ids=np.array([SCRIPT, "s1", ATTR, AMP] + [f"m{i}" for i in range(4, 12)]), labels=labels
    )
    return SimpleNamespace(
        methods={METHOD: a, "b": b, "many": many},
        probe=probe,
        predictions=np.array([1, 2, 3, 0] * 3),
        targets=np.array([2, 2, 1, 0] * 3),
    )


WORST_HEAD = (
    "<table><thead><tr><th>id</th><th>label</th><th>prediction</th><th>target</th>"
    "<th>completeness error</th><th>steps</th></tr></thead><tbody>"
)


def _worst_row(*cells):
    tds = [f"<td>{c}</td>" for c in cells[:4]] + [f'<td class="num">{c}</td>' for c in cells[4:]]
    return "<tr>" + "".join(tds) + "</tr>"


def test_worst(tmp_path):
    _png(tmp_path / METHOD / "worst.png")
    report = _worst_report(labels=np.array([7, 8, 9, 6] * 3))
    many_rows = "".join(
        _worst_row(f"m{i}" if i > 3 else {0: SCRIPT_ESC, 1: "s1", 2: ATTR_ESC, 3: AMP_ESC}[i],
                   [7, 8, 9, 6][i % 4], [1, 2, 3, 0][i % 4], [2, 2, 1, 0][i % 4],
                   f"{i * 10:.3f}%", f"{2 * i}")
        for i in range(10)
    )  # fmt: skip
    assert rh._worst(report, tmp_path) == (
        "<h2>Worst samples</h2>"
        f"<h3>{METHOD_ESC}</h3>"
        + WORST_HEAD
        + _worst_row(SCRIPT_ESC, "7", "1", "2", "50.000%", "")
        + _worst_row(AMP_ESC, "6", "0", "0", "12.346%", "")
        + _worst_row(ATTR_ESC, "9", "3", "1", "2.000%", "")
        + "</tbody></table>"
        + _figure_html(f"{METHOD_ESC}: worst samples by completeness error")
        + "<h3>many</h3>"
        + WORST_HEAD
        + many_rows
        + "</tbody></table>"
    )


def test_worst_shows_the_class_each_result_explained(tmp_path):
    # With several targets each result has its own classes; the report's are the first target's.
    report = _worst_report(labels=None)
    report.methods[METHOD].targets = np.array([40, 41, 42, 43] * 3)
    html = rh._worst(report, tmp_path)
    assert _worst_row(SCRIPT_ESC, "-", "1", "40", "50.000%", "") in html
    assert _worst_row(AMP_ESC, "-", "0", "43", "12.346%", "") in html
    assert _worst_row("m4", "-", "1", "2", "40.000%", "8") in html  # "many" has no targets of its own


def test_worst_without_labels_or_anything_judged(tmp_path):
    report = _worst_report(labels=None)
    html = rh._worst(report, tmp_path)
    assert html.count("<tr><td>") == 3 + 10  # the worst ten at most
    assert _worst_row(SCRIPT_ESC, "-", "1", "2", "50.000%", "") in html
    report.methods = {"b": report.methods["b"]}
    assert rh._worst(report, tmp_path) == ""


def test_features(tmp_path):
    report = SimpleNamespace(methods={METHOD: None, "b": None, "c": None})
    assert rh._features(report, tmp_path) == ""
    _png(tmp_path / METHOD / "feature_attributions.png")
    _png(tmp_path / "c" / "feature_attributions.png")
    assert rh._features(report, tmp_path) == (
        "<h2>Feature attributions</h2>"
        '<p class="muted">Mean |attribution| per feature over the probe set; every feature is in '
        "<code>&lt;method&gt;/feature_attributions.csv</code>.</p>"
        + _figure_html(f"{METHOD_ESC}: mean |attribution| per feature")
        + _figure_html("c: mean |attribution| per feature")
    )


def test_convergence(tmp_path):
    assert rh._convergence(tmp_path) == ""
    folder = tmp_path / "integrated_gradients"
    for name in ("ig_completeness_vs_steps.png", "ig_gradient_along_path.png", "other.png"):
        _png(folder / name)
    assert rh._convergence(tmp_path) == (
        "<h2>Integrated Gradients convergence</h2>"
        '<p class="muted">For the first probe samples: completeness error against gradient '
        "evaluations, the explained output and the gradient magnitude along the path.</p>"
        '<div class="row">'
        + _figure_html("ig_completeness_vs_steps.png")
        + _figure_html("ig_gradient_along_path.png")
        + "</div>"
    )


def test_distributions(tmp_path):
    assert rh._distributions(tmp_path) == ""
    _png(tmp_path / "plots" / "steps_hist.png")
    steps = _figure_html("gradient evaluations per sample")
    assert rh._distributions(tmp_path) == f'<h2>Distributions</h2><div class="row">{steps}</div>'
    _png(tmp_path / "plots" / "completeness_error_hist.png")
    errors = _figure_html("completeness error per sample")
    assert rh._distributions(tmp_path) == f'<h2>Distributions</h2><div class="row">{errors}{steps}</div>'


def test_per_class(tmp_path):
    rows = [
        {"class": SCRIPT, "count": 3, "accuracy": 0.5, f"{METHOD}/median": math.nan},
        {"class": 2, "count": 1, "accuracy": "", f"{METHOD}/median": 0.0123456},
    ]
    report = SimpleNamespace(class_summary=lambda: rows, probe=SimpleNamespace(labels=np.array([0])))
    table = (
        "<table><thead><tr><th>class</th><th>count</th><th>accuracy</th>"
        f"<th>{METHOD_ESC}/median</th></tr></thead><tbody>"
        f'<tr><td>{SCRIPT_ESC}</td><td class="num">3</td><td class="num">0.5</td><td class="num">-</td></tr>'
        '<tr><td>2</td><td class="num">1</td><td class="num"></td><td class="num">0.01235</td></tr>'
        "</tbody></table>"
    )
    assert rh._per_class(report, tmp_path) == (
        '<h2>Per class</h2><p class="muted">Grouped by label.</p>' + table
    )
    _png(tmp_path / "plots" / "class_summary.png")
    report.probe.labels = None
    assert rh._per_class(report, tmp_path) == (
        '<h2>Per class</h2><p class="muted">Grouped by predicted class (the probe has no labels).</p>'
        + table
        + _figure_html("per-class summary")
    )
    assert rh._per_class(SimpleNamespace(class_summary=list), tmp_path) == ""
    one = SimpleNamespace(class_summary=lambda: rows[1:], probe=SimpleNamespace(labels=None))
    assert rh._per_class(one, tmp_path).startswith(
        '<h2>Per class</h2><p class="muted">Grouped by predicted class (the probe has no labels).</p>'
        "<table><thead><tr><th>class</th><th>count</th><th>accuracy</th>"
        f"<th>{METHOD_ESC}/median</th></tr></thead><tbody>"
        '<tr><td>2</td><td class="num">1</td><td class="num"></td><td class="num">0.01235</td></tr>'
        "</tbody></table><figure>"
    )


def test_provenance():
    record = {
        "versions": {"torch": "2.5", SCRIPT: ATTR},
        "device": "cpu",
        "compute_dtype": "float32",
        "mask_dtype": "float16",
        "seed": 0,
        "tf32_matmul": False,
        "tf32_cudnn": True,
        "probe_samples": 40,
        "probe_sha256": "ab12",
        "exported_model": None,
        "config_yaml": f"a: 1\nb: {QUOTE} {AMP}\n",
        "ignored": SCRIPT,
    }
    assert rh._provenance(record) == (
        "<h2>Provenance</h2>"
        "<table><thead><tr><th></th><th>value</th></tr></thead><tbody>"
        "<tr><td>version of torch</td><td>2.5</td></tr>"
        f"<tr><td>version of {SCRIPT_ESC}</td><td>{ATTR_ESC}</td></tr>"
        "<tr><td>device</td><td>cpu</td></tr>"
        "<tr><td>compute_dtype</td><td>float32</td></tr>"
        "<tr><td>mask_dtype</td><td>float16</td></tr>"
        "<tr><td>seed</td><td>0</td></tr>"
        "<tr><td>tf32_matmul</td><td>False</td></tr>"
        "<tr><td>tf32_cudnn</td><td>True</td></tr>"
        "<tr><td>probe_samples</td><td>40</td></tr>"
        "<tr><td>probe_sha256</td><td>ab12</td></tr>"
        "<tr><td>exported_model</td><td>None</td></tr>"
        "</tbody></table>"
        "<h3>Config used</h3>"
        f"<pre>a: 1\nb: {QUOTE_ESC} {AMP_ESC}\n</pre>"
    )
