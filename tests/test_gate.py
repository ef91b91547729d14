"""The gate's judgement, and what it hands to a CI system, on metrics known in advance."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import mlflow
import numpy as np
import pytest
from mlflow.models import EvaluationResult

from mlflow_xai.checks.drift import attribution_drift
from mlflow_xai.ci import judge, junit_xml, markdown_summary, publish
from mlflow_xai.config import load_config
from mlflow_xai.errors import ConfigError
from mlflow_xai.tracking import metric_thresholds

IG = "xai/integrated_gradients/"


def _metrics(pass_fraction=1.0, samples=10.0, degenerate=0.0, **extra):
    out = {
        IG + "samples": samples,
        IG + "degenerate_baseline_count": degenerate,
        IG + "completeness_rel_error_max": 0.5,
        IG + "completeness_rel_error_p95": 0.004,
    }
    if samples > degenerate:
        out[IG + "completeness_pass_fraction"] = pass_fraction
    out.update(extra)
    return out


def _config(thresholds=None, fail_on=("fail",)):
    return load_config(
        {
            "methods": {"integrated_gradients": {}},
            "gate": {"thresholds": thresholds or {}, "fail_on": list(fail_on)},
        }
    )


def test_method_check_passes_and_fails_with_the_count():
    assert judge(_metrics(), _config()).status == "pass"
    result = judge(_metrics(pass_fraction=0.7), _config())
    assert result.status == "fail" and result.exit_code == 1
    assert "3 of 10 samples above 0.01 relative completeness error (worst 0.5)" in result.checks[0].message


def test_every_sample_degenerate_is_a_failure_not_a_pass():
    result = judge(_metrics(samples=5.0, degenerate=5.0), _config())
    assert result.status == "fail"
    assert "every one of 5 samples has a degenerate baseline" in result.checks[0].message


@pytest.mark.parametrize(
    ("value", "higher", "expected"),
    [
        (0.004, False, "pass"),
        (0.007, False, "warn"),
        (0.02, False, "fail"),
        (0.9, True, "pass"),
        (0.6, True, "warn"),
        (0.2, True, "fail"),
    ],
)
def test_absolute_levels_in_both_directions(value, higher, expected):
    levels = {"warn": 0.005, "fail": 0.01} if not higher else {"warn": 0.8, "fail": 0.5}
    name = IG + "object_mass_fraction_mean"
    cfg = _config({name: {**levels, "higher_is_better": higher}})
    cfg = cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"method_checks": False})})
    result = judge({**_metrics(), name: value}, cfg)
    assert [c.level for c in result.checks] == [expected]


def test_warn_fails_the_job_only_when_fail_on_lists_it():
    name = IG + "completeness_rel_error_p95"
    metrics = _metrics(**{name: 0.007})
    assert judge(metrics, _config({name: {"warn": 0.005}})).exit_code == 0
    strict = judge(metrics, _config({name: {"warn": 0.005}}, fail_on=("fail", "warn")))
    assert strict.status == "warn" and strict.exit_code == 1


def test_relative_to_the_baseline_model():
    name = IG + "completeness_rel_error_p95"
    cfg = _config({name: {"fail": 0.5, "relative": True}})
    base = {name: 0.010}
    assert judge(_metrics(**{name: 0.014}), cfg, baseline_metrics=base).status == "pass"
    worse = judge(_metrics(**{name: 0.016}), cfg, baseline_metrics=base)
    assert worse.status == "fail" and "60.0% worse than the baseline model's 0.01" in worse.checks[-1].message
    with pytest.raises(ConfigError, match="relative to the baseline model, but no baseline metrics"):
        judge(_metrics(**{name: 0.016}), cfg)


def test_unknown_metric_and_empty_gate_are_errors():
    with pytest.raises(ConfigError, match="but method 'occlusion' is not enabled"):
        judge(_metrics(), _config({"xai/occlusion/seconds": {"fail": 1.0}}))
    cfg = load_config({"methods": {"saliency": {}}, "gate": {"fail_on": ["fail"]}})
    with pytest.raises(ConfigError, match="the gate evaluates no check"):
        judge({"xai/saliency/samples": 3.0, "xai/saliency/seconds": 0.1}, cfg)


def test_without_a_gate_section_nothing_to_check_is_unchecked():
    cfg = load_config({"methods": {"saliency": {}}})
    result = judge({"xai/saliency/samples": 3.0, "xai/saliency/seconds": 0.1}, cfg)
    assert result.status == "unchecked" and result.exit_code == 0 and result.checks == []


def test_a_declared_metric_without_a_value_fails_with_the_reason():
    name = IG + "completeness_rel_error_p95"
    metrics = {IG + "samples": 4.0, IG + "seconds": 0.1, IG + "degenerate_baseline_count": 4.0}
    result = judge(metrics, _config({name: {"fail": 0.01}}))
    assert result.status == "fail" and result.exit_code == 1
    (threshold,) = [c for c in result.checks if c.name == name]
    assert threshold.level == "fail"
    assert "every one of 4 samples has a degenerate baseline" in threshold.message


def test_junit_markdown_and_annotations_agree(tmp_path, monkeypatch):
    name = IG + "completeness_rel_error_p95"
    result = judge(_metrics(pass_fraction=0.9, **{name: 0.007}), _config({name: {"warn": 0.005}}))
    summary_file = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    lines = publish(result, junit=str(tmp_path / "j.xml"), summary=str(tmp_path / "s.md"), run_id="abc")
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {"integrated_gradients.completeness", name}
    assert suite.get("failures") == "1"
    assert cases["integrated_gradients.completeness"].find("failure") is not None
    assert cases[name].find("failure") is None
    assert lines == [
        "::error title=mlflow-xai integrated_gradients.completeness::1 of 10 samples above 0.01 "
        "relative completeness error (worst 0.5)",
        f"::warning title=mlflow-xai {name}::{name} = 0.007 is above 0.005",
    ]
    text = (tmp_path / "s.md").read_text()
    assert text in summary_file.read_text()
    assert "### mlflow-xai gate: FAIL" in text and "| `" + name + "` | WARN |" in text
    assert junit_xml(result).startswith("<?xml")
    assert "abc" in markdown_summary(result, run_id="abc")


def test_metric_thresholds_gate_through_mlflow():
    name = IG + "completeness_rel_error_p95"
    cfg = _config({name: {"fail": 0.01}, IG + "steps_mean": {"fail": 0.5, "relative": True}})
    thresholds = metric_thresholds(cfg)
    assert list(thresholds) == [name]  # relative levels have no MetricThreshold equivalent
    mlflow.validate_evaluation_results(thresholds, EvaluationResult({name: 0.005}, {}))
    with pytest.raises(Exception, match="completeness_rel_error_p95"):
        mlflow.validate_evaluation_results(thresholds, EvaluationResult({name: 0.05}, {}))


def test_attribution_drift_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 2, 5, 5))
    same = attribution_drift(a, a.copy())
    assert np.allclose(same["drift_rank_correlation"], 1.0)
    assert np.allclose(same["drift_topk_overlap"], 1.0)
    # Reverse the magnitude ranking: rank correlation -1, and the top 10% share nothing.
    flat = np.abs(a.reshape(3, -1))
    order = np.argsort(flat, axis=1)
    reversed_ = np.empty_like(flat)
    for i in range(3):
        reversed_[i, order[i]] = flat[i, order[i][::-1]]
    drift = attribution_drift(a, reversed_.reshape(a.shape))
    assert np.allclose(drift["drift_rank_correlation"], -1.0)
    assert np.allclose(drift["drift_topk_overlap"], 0.0)


@pytest.mark.parametrize(
    ("name", "metrics", "reason"),
    [
        (
            IG + "completeness_rel_error_p95",
            {IG + "samples": 4.0, IG + "degenerate_baseline_count": 4.0},
            f"{IG}completeness_rel_error_p95 has no value: every one of 4 samples has a degenerate "
            "baseline (|F(x) - F(x')| below the floor), so the model gave nothing to judge",
        ),
        (
            IG + "object_mass_fraction_mean",
            {IG + "samples": 4.0, IG + "degenerate_baseline_count": 0.0},
            f"{IG}object_mass_fraction_mean has no value: the probe set has no masks, or every "
            "attribution map is zero",
        ),
        (
            IG + "drift_topk_overlap_min",
            {IG + "samples": 4.0, IG + "degenerate_baseline_count": 0.0},
            f"{IG}drift_topk_overlap_min has no value: no baseline model was audited beside this one",
        ),
        (
            IG + "completeness_rel_error_p95",
            {IG + "samples": 4.0, IG + "degenerate_baseline_count": 3.0},
            f"{IG}completeness_rel_error_p95 has no value: no sample gave a finite value for it",
        ),
    ],
)
def test_each_missing_metric_fails_with_its_own_reason(name, metrics, reason):
    result = judge(metrics, _config({name: {"fail": 0.5, "higher_is_better": True}}))
    (check,) = [c for c in result.checks if c.name == name]
    assert (check.kind, check.level, check.message, check.value) == ("threshold", "fail", reason, None)
    assert result.exit_code == 1


def test_a_metric_no_method_produces_is_a_config_error_naming_the_close_one():
    with pytest.raises(ConfigError) as err:
        judge(_metrics(), _config({IG + "completness_rel_error_p95": {"fail": 0.1}}))
    message = str(err.value)
    assert message.startswith(
        f"gate.thresholds names metric '{IG}completness_rel_error_p95', which 'integrated_gradients' "
        f"as configured does not produce; did you mean '{IG}completeness_rel_error_p95'? It produces: "
    )
    assert f"{IG}steps_mean" in message and "xai/probe" not in message


def test_relative_threshold_needs_the_metric_in_the_baseline_too():
    name = IG + "completeness_rel_error_p95"
    cfg = _config({name: {"fail": 0.5, "relative": True}})
    with pytest.raises(ConfigError, match="relative to the baseline model, but no baseline metrics"):
        judge(_metrics(**{name: 0.016}), cfg, baseline_metrics={IG + "samples": 10.0})


def test_a_gate_section_that_checks_nothing_is_an_error_even_with_checked_metrics():
    cfg = load_config({"methods": {"integrated_gradients": {}}, "gate": {"method_checks": False}})
    with pytest.raises(ConfigError) as err:
        judge(_metrics(), cfg)
    assert str(err.value).startswith("the gate evaluates no check: enable a method with a completeness check")
