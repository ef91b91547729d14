"""The gate's threshold arithmetic, method checks, CI outputs and drift, against answers worked out here.

Judging a threshold metric the audit did not produce, a gate with no check and what check_gate_config
finds in the metric catalogue are left to tests/test_gate.py and tests/test_trust.py: that behaviour is
changing.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from mlflow_xai.checks.drift import attribution_drift, drift_metrics
from mlflow_xai.ci import (
    GateCheck,
    GateResult,
    check_gate_config,
    github_annotations,
    judge,
    junit_xml,
    markdown_summary,
    publish,
)
from mlflow_xai.ci.gate import _method_check, _threshold_check
from mlflow_xai.config import ThresholdConfig, load_config
from mlflow_xai.errors import ConfigError
from mlflow_xai.tracking import metric_thresholds

NAME = "xai/integrated_gradients/completeness_rel_error_p95"
IG = "xai/integrated_gradients/"


def _threshold(**levels) -> ThresholdConfig:
    return ThresholdConfig(**levels)


# --------------------------------------------------------------------------------------------------
# Thresholds: absolute levels. Values are binary fractions, so "exactly at the level" is exact.

LOWER = {"warn": 0.25, "fail": 0.5}
HIGHER = {"warn": 0.75, "fail": 0.5, "higher_is_better": True}


@pytest.mark.parametrize(
    ("levels", "value", "level", "message"),
    [
        (LOWER, 0.125, "pass", f"{NAME} = 0.125 within its levels"),
        (LOWER, 0.25, "pass", f"{NAME} = 0.25 within its levels"),  # at the warn level: not above it
        (LOWER, 0.375, "warn", f"{NAME} = 0.375 is above 0.25"),
        (LOWER, 0.5, "warn", f"{NAME} = 0.5 is above 0.25"),  # at the fail level: only a warning
        (LOWER, 0.625, "fail", f"{NAME} = 0.625 is above 0.5"),
        (LOWER, -3.0, "pass", f"{NAME} = -3 within its levels"),
        (HIGHER, 0.875, "pass", f"{NAME} = 0.875 within its levels"),
        (HIGHER, 0.75, "pass", f"{NAME} = 0.75 within its levels"),
        (HIGHER, 0.625, "warn", f"{NAME} = 0.625 is below 0.75"),
        (HIGHER, 0.5, "warn", f"{NAME} = 0.5 is below 0.75"),
        (HIGHER, 0.375, "fail", f"{NAME} = 0.375 is below 0.5"),
        (HIGHER, 12.0, "pass", f"{NAME} = 12 within its levels"),
        ({"fail": 0.5}, 0.625, "fail", f"{NAME} = 0.625 is above 0.5"),
        ({"fail": 0.5}, 0.375, "pass", f"{NAME} = 0.375 within its levels"),
        ({"warn": 0.25}, 0.375, "warn", f"{NAME} = 0.375 is above 0.25"),  # no fail level to skip past
        ({"warn": 0.25}, 100.0, "warn", f"{NAME} = 100 is above 0.25"),
        ({"warn": 2.5, "higher_is_better": True}, 1.0, "warn", f"{NAME} = 1 is below 2.5"),
        ({"fail": 1e-05}, 0.0123456, "fail", f"{NAME} = 0.01235 is above 1e-05"),
    ],
)
def test_absolute_threshold(levels, value, level, message):
    check = _threshold_check(NAME, value, _threshold(**levels), None)
    assert check == GateCheck(NAME, "threshold", level, message, value)


# --------------------------------------------------------------------------------------------------
# Thresholds relative to the baseline model: a level is the allowed relative change for the worse.

REL_LOWER = {"warn": 0.25, "fail": 0.5, "relative": True}
REL_HIGHER = {"warn": 0.25, "fail": 0.5, "relative": True, "higher_is_better": True}


def _worse(value, pct, baseline, allowed):
    return f"{NAME} = {value} is {pct} worse than the baseline model's {baseline} (allowed {allowed})"


def _within(value, baseline):
    return f"{NAME} = {value} within its levels (baseline model {baseline})"


@pytest.mark.parametrize(
    ("levels", "value", "baseline", "level", "message"),
    [
        # lower is better: worse means larger; change = (baseline - value) / |baseline|
        (REL_LOWER, 0.5, 0.5, "pass", f"{NAME} = 0.5 within its levels (baseline model 0.5)"),
        (REL_LOWER, 0.25, 0.5, "pass", f"{NAME} = 0.25 within its levels (baseline model 0.5)"),
        (REL_LOWER, 0.625, 0.5, "pass", f"{NAME} = 0.625 within its levels (baseline model 0.5)"),  # 25%
        (REL_LOWER, 0.6875, 0.5, "warn", _worse(0.6875, "37.5%", 0.5, "25.0%")),
        (REL_LOWER, 0.75, 0.5, "warn", _worse(0.75, "50.0%", 0.5, "25.0%")),  # exactly at the fail level
        (REL_LOWER, 0.8125, 0.5, "fail", _worse(0.8125, "62.5%", 0.5, "50.0%")),
        (REL_LOWER, 3.0, 2.0, "warn", _worse(3, "50.0%", 2, "25.0%")),
        (REL_LOWER, 3.5, 2.0, "fail", _worse(3.5, "75.0%", 2, "50.0%")),
        # a negative baseline: relative to its magnitude
        (REL_LOWER, -0.25, -0.5, "warn", _worse(-0.25, "50.0%", -0.5, "25.0%")),
        (REL_LOWER, -0.75, -0.5, "pass", f"{NAME} = -0.75 within its levels (baseline model -0.5)"),
        # higher is better: worse means smaller
        (REL_HIGHER, 0.375, 0.5, "pass", f"{NAME} = 0.375 within its levels (baseline model 0.5)"),  # 25%
        (REL_HIGHER, 0.3125, 0.5, "warn", _worse(0.3125, "37.5%", 0.5, "25.0%")),
        (REL_HIGHER, 0.1875, 0.5, "fail", _worse(0.1875, "62.5%", 0.5, "50.0%")),
        (REL_HIGHER, 0.75, 0.5, "pass", f"{NAME} = 0.75 within its levels (baseline model 0.5)"),
        ({"fail": 0.0, "relative": True}, 0.5, 0.5, "pass", _within(0.5, 0.5)),
        ({"fail": 0.0, "relative": True}, 0.5625, 0.5, "fail", _worse(0.5625, "12.5%", 0.5, "0.0%")),
        ({"warn": 0.25, "relative": True}, 0.75, 0.5, "warn", _worse(0.75, "50.0%", 0.5, "25.0%")),
        # a zero baseline: the change is measured against 1e-12 instead
        ({"fail": 0.05, "relative": True}, 1e-13, 0.0, "fail", _worse(1e-13, "10.0%", 0, "5.0%")),
        ({"fail": 0.15, "relative": True}, 1e-13, 0.0, "pass", _within(1e-13, 0)),
        ({"fail": 0.05, "relative": True}, 0.0123456, 0.01, "fail", _worse(0.01235, "23.5%", 0.01, "5.0%")),
    ],
)
def test_relative_threshold(levels, value, baseline, level, message):
    check = _threshold_check(NAME, value, _threshold(**levels), baseline)
    assert check == GateCheck(NAME, "threshold", level, message, value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("baseline", [None, 0.5])
def test_a_non_finite_value_fails_whatever_the_levels(value, baseline):
    levels = {"warn": 1e9, "relative": baseline is not None}
    check = _threshold_check(NAME, value, _threshold(**levels), baseline)
    assert (check.name, check.kind, check.level) == (NAME, "threshold", "fail")
    assert check.message == f"{NAME} is {value}, not a finite number"
    assert check.value is value


# --------------------------------------------------------------------------------------------------
# Method checks (completeness), from the metrics alone


def _ig(**metrics) -> dict[str, float]:
    return {IG + key: value for key, value in metrics.items()}


@pytest.mark.parametrize(
    "metrics",
    [
        {},
        _ig(samples=10.0),
        _ig(degenerate_baseline_count=0.0),
        _ig(degenerate_baseline_count=0.0, completeness_pass_fraction=1.0),
        {"xai/deeplift/samples": 10.0, "xai/deeplift/degenerate_baseline_count": 0.0},
    ],
)
def test_no_method_check_without_samples_and_degenerate_count(metrics):
    assert _method_check("integrated_gradients", metrics, 0.01) is None


@pytest.mark.parametrize(
    ("metrics", "tolerance", "level", "message", "value"),
    [
        (
            _ig(samples=10.0, degenerate_baseline_count=0.0, completeness_pass_fraction=1.0),
            0.01,
            "pass",
            "all 10 samples within 0.01 relative completeness error",
            1.0,
        ),
        (
            _ig(samples=10.0, degenerate_baseline_count=2.0, completeness_pass_fraction=1.0),
            0.005,
            "pass",
            "all 8 samples within 0.005 relative completeness error; 2 degenerate baseline(s) not judged",
            1.0,
        ),
        (
            _ig(samples=1.0, degenerate_baseline_count=0.0, completeness_pass_fraction=1.0),
            1e-05,
            "pass",
            "all 1 samples within 1e-05 relative completeness error",
            1.0,
        ),
        (
            _ig(
                samples=10.0,
                degenerate_baseline_count=0.0,
                completeness_pass_fraction=0.7,
                completeness_rel_error_max=0.123456,
            ),
            0.01,
            "fail",
            "3 of 10 samples above 0.01 relative completeness error (worst 0.123)",
            0.7,
        ),
        (
            _ig(
                samples=12.0,
                degenerate_baseline_count=4.0,
                completeness_pass_fraction=0.25,
                completeness_rel_error_max=2.5,
            ),
            0.02,
            "fail",
            "6 of 8 samples above 0.02 relative completeness error (worst 2.5); "
            "4 degenerate baseline(s) not judged",
            0.25,
        ),
        (  # neither the pass fraction nor the worst error logged: every judged sample failed, worst unknown
            _ig(samples=5.0, degenerate_baseline_count=1.0),
            0.01,
            "fail",
            "4 of 4 samples above 0.01 relative completeness error (worst nan); "
            "1 degenerate baseline(s) not judged",
            0.0,
        ),
        (
            _ig(samples=4.0, degenerate_baseline_count=3.0, completeness_pass_fraction=0.0),
            0.01,
            "fail",
            "1 of 1 samples above 0.01 relative completeness error (worst nan); "
            "3 degenerate baseline(s) not judged",
            0.0,
        ),
    ],
)
def test_method_check_counts(metrics, tolerance, level, message, value):
    check = _method_check("integrated_gradients", metrics, tolerance)
    assert check == GateCheck("integrated_gradients.completeness", "method_check", level, message, value)


@pytest.mark.parametrize(("samples", "degenerate"), [(5.0, 5.0), (3.0, 3.0), (2.0, 4.0)])
def test_method_check_with_nothing_to_judge_fails(samples, degenerate):
    metrics = _ig(samples=samples, degenerate_baseline_count=degenerate, completeness_pass_fraction=1.0)
    check = _method_check("integrated_gradients", metrics, 0.01)
    message = (
        f"every one of {int(samples)} samples has a degenerate baseline "
        "(|F(x) - F(x')| below the floor): completeness could not be judged"
    )
    assert check == GateCheck("integrated_gradients.completeness", "method_check", "fail", message, None)


# --------------------------------------------------------------------------------------------------
# The result and judge


def _result(*levels: str, fail_on=("fail",)) -> GateResult:
    checks = [GateCheck(f"c{i}", "threshold", level, f"m{i}", float(i)) for i, level in enumerate(levels)]
    return GateResult(checks, tuple(fail_on))


@pytest.mark.parametrize(
    ("levels", "fail_on", "status", "exit_code"),
    [
        (("pass",), ("fail",), "pass", 0),
        (("pass", "warn"), ("fail",), "warn", 0),
        (("pass", "warn"), ("fail", "warn"), "warn", 1),
        (("warn", "fail", "pass"), ("fail",), "fail", 1),
        (("fail", "warn"), ("warn",), "fail", 1),
        (("fail",), ("warn",), "fail", 0),
    ],
)
def test_status_and_exit_code(levels, fail_on, status, exit_code):
    result = _result(*levels, fail_on=fail_on)
    assert (result.status, result.exit_code) == (status, exit_code)
    assert result.to_dict() == {
        "status": status,
        "exit_code": exit_code,
        "fail_on": list(fail_on),
        "checks": [
            {
                "name": f"c{i}",
                "kind": "threshold",
                "level": level,
                "message": f"m{i}",
                "value": float(i),
                "seed_spread": None,
            }
            for i, level in enumerate(levels)
        ],
        "noise_warnings": [],
    }


def _config(methods, thresholds=None, *, fail_on=("fail",), method_checks=True, tolerance=0.01):
    return load_config(
        {
            "methods": {m: {} for m in methods},
            "checks": {"completeness": {"tolerance": tolerance}},
            "gate": {
                "thresholds": thresholds or {},
                "fail_on": list(fail_on),
                "method_checks": method_checks,
            },
        }
    )


def _method_metrics(method, samples, fraction):
    prefix = f"xai/{method}/"
    return {
        prefix + "samples": samples,
        prefix + "degenerate_baseline_count": 0.0,
        prefix + "completeness_pass_fraction": fraction,
        prefix + "completeness_rel_error_max": 0.5,
    }


def test_judge_method_checks_in_name_order_then_thresholds_in_config_order():
    seconds = "xai/saliency/seconds"
    thresholds = {seconds: {"warn": 1.0}, NAME: {"fail": 0.5, "relative": True}}
    methods = ["saliency", "integrated_gradients", "deeplift"]
    cfg = _config(methods, thresholds, fail_on=("fail", "warn"), tolerance=0.05)
    metrics = {
        **_method_metrics("integrated_gradients", 4.0, 1.0),
        **_method_metrics("deeplift", 4.0, 0.5),
        "xai/saliency/samples": 4.0,  # no completeness check: no degenerate count
        seconds: 2.0,
        NAME: 0.8125,
    }
    result = judge(metrics, cfg, baseline_metrics={NAME: 0.5, seconds: 100.0})
    assert [(c.name, c.level) for c in result.checks] == [
        ("deeplift.completeness", "fail"),
        ("integrated_gradients.completeness", "pass"),
        (seconds, "warn"),  # absolute: the baseline's 100 s is not used
        (NAME, "fail"),
    ]
    assert result.checks[0].message == "2 of 4 samples above 0.05 relative completeness error (worst 0.5)"
    assert result.checks[2].message == f"{seconds} = 2 is above 1"
    assert result.checks[3].message == _worse(0.8125, "62.5%", 0.5, "50.0%")
    assert result.fail_on == ("fail", "warn") and result.exit_code == 1


def test_judge_without_method_checks_judges_thresholds_only():
    cfg = _config(["integrated_gradients"], {NAME: {"fail": 0.5}}, method_checks=False)
    metrics = {**_method_metrics("integrated_gradients", 4.0, 0.0), NAME: 0.25}
    result = judge(metrics, cfg)
    assert result.checks == [GateCheck(NAME, "threshold", "pass", f"{NAME} = 0.25 within its levels", 0.25)]
    assert result.status == "pass" and result.fail_on == ("fail",)


@pytest.mark.parametrize("baseline", [None, {}, {"xai/integrated_gradients/seconds": 1.0}])
def test_judge_relative_threshold_without_the_baseline_value(baseline):
    cfg = _config(["integrated_gradients"], {NAME: {"fail": 0.5, "relative": True}})
    message = (
        f"gate.thresholds.{NAME} is relative to the baseline model, but no baseline metrics are available; "
        "pass --baseline-model-uri"
    )
    metrics = {**_method_metrics("integrated_gradients", 4.0, 1.0), NAME: 0.5}
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        judge(metrics, cfg, baseline_metrics=baseline)


def test_check_gate_config_relative_thresholds_need_a_baseline():
    absolute = _config(["integrated_gradients"], {NAME: {"fail": 0.5}})
    check_gate_config(absolute, has_baseline=False)
    relative = _config(["integrated_gradients"], {NAME: {"fail": 0.5, "relative": True}})
    check_gate_config(relative, has_baseline=True)
    message = (
        f"gate.thresholds.{NAME} is relative to the baseline model, but no baseline metrics are available; "
        "pass --baseline-model-uri"
    )
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        check_gate_config(relative, has_baseline=False)


# --------------------------------------------------------------------------------------------------
# What a CI system reads

MIXED = GateResult(
    [
        GateCheck("integrated_gradients.completeness", "method_check", "fail", 'bad <1> & "2" | 3', 0.5),
        GateCheck(NAME, "threshold", "warn", "50% worse\r\nsee log", 0.75),
        GateCheck("xai/probe/accuracy", "threshold", "pass", "fine", 0.9),
    ],
    ("fail",),
)


@pytest.mark.parametrize(("fail_on", "failures"), [(("fail",), 1), (("fail", "warn"), 2), (("warn",), 1)])
def test_junit_xml(fail_on, failures):
    result = GateResult(MIXED.checks, fail_on)
    text = junit_xml(result)
    assert text.startswith("<?xml version='1.0' encoding='")
    root = ET.fromstring(text.split("?>", 1)[1])
    assert root.tag == "testsuites"
    assert root.attrib == {"name": "mlflow-xai", "tests": "3", "failures": str(failures)}
    (suite,) = list(root)
    assert suite.tag == "testsuite"
    assert suite.attrib == {"name": "mlflow-xai", "tests": "3", "failures": str(failures)}
    cases = list(suite)
    assert [c.tag for c in cases] == ["testcase"] * 3
    assert [c.attrib for c in cases] == [
        {"classname": "mlflow-xai.method_check", "name": "integrated_gradients.completeness"},
        {"classname": "mlflow-xai.threshold", "name": NAME},
        {"classname": "mlflow-xai.threshold", "name": "xai/probe/accuracy"},
    ]
    for case, check in zip(cases, result.checks, strict=True):
        (child,) = list(case)
        if check.level in fail_on:
            assert child.tag == "failure"
            assert child.attrib == {"message": check.message, "type": check.level}
            assert child.text == check.message.replace("\r\n", "\n")  # XML text normalises CR LF to LF
        else:
            assert child.tag == "system-out" and not child.attrib
            assert child.text == f"{check.level}: {check.message}".replace("\r\n", "\n")


def test_junit_xml_suite_name():
    root = ET.fromstring(junit_xml(MIXED, suite="xai gate").split("?>", 1)[1])
    assert root.get("name") == root[0].get("name") == "xai gate"
    assert root[0][1].get("classname") == "xai gate.threshold"


def test_markdown_summary():
    expected = "\n".join(
        [
            "### mlflow-xai gate: FAIL",
            "",
            "MLflow run `r123`",
            "",
            "| check | level | detail |",
            "| --- | --- | --- |",
            '| `integrated_gradients.completeness` | FAIL | bad <1> & "2" \\| 3 |',
            f"| `{NAME}` | WARN | 50% worse\r\nsee log |",
            "| `xai/probe/accuracy` | PASS | fine |",
            "",
        ]
    )
    assert markdown_summary(MIXED, run_id="r123") == expected
    without_run = expected.replace("MLflow run `r123`\n\n", "")
    assert markdown_summary(MIXED) == without_run
    assert markdown_summary(MIXED, run_id="") == without_run


@pytest.mark.parametrize(
    ("levels", "status"), [((), "UNCHECKED"), (("pass",), "PASS"), (("warn", "pass"), "WARN")]
)
def test_markdown_summary_status(levels, status):
    assert markdown_summary(_result(*levels)).startswith(f"### mlflow-xai gate: {status}\n\n| check |")
    if not levels:  # nothing judged: the table has its header only
        assert markdown_summary(_result()) == (
            "### mlflow-xai gate: UNCHECKED\n\n| check | level | detail |\n| --- | --- | --- |\n"
        )


def test_github_annotations():
    assert github_annotations(MIXED) == [
        '::error title=mlflow-xai integrated_gradients.completeness::bad <1> & "2" | 3',
        f"::warning title=mlflow-xai {NAME}::50%25 worse%0D%0Asee log",
    ]
    strict = GateResult(MIXED.checks, ("fail", "warn"))
    assert github_annotations(strict)[1] == f"::error title=mlflow-xai {NAME}::50%25 worse%0D%0Asee log"
    tricky = GateResult([GateCheck("n", "threshold", "fail", "%0A\n%", None)], ("fail",))
    assert github_annotations(tricky) == ["::error title=mlflow-xai n::%250A%0A%25"]
    assert github_annotations(_result("pass", "pass")) == []
    assert github_annotations(_result("pass", "fail", "pass", "warn")) == [
        "::error title=mlflow-xai c1::m1",
        "::warning title=mlflow-xai c3::m3",
    ]


def test_publish_writes_where_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    junit, summary = tmp_path / "out" / "j.xml", tmp_path / "s.md"
    junit.parent.mkdir()
    assert publish(MIXED, junit=str(junit), summary=str(summary), run_id="r1") == []
    assert junit.read_bytes().decode() == junit_xml(MIXED)  # bytes: read_text would translate the CR LF
    assert summary.read_bytes().decode() == markdown_summary(MIXED, run_id="r1")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["j.xml", "out", "s.md"]  # no .tmp left behind

    step = tmp_path / "step.md"
    step.write_text("earlier\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    monkeypatch.setenv("GITHUB_ACTIONS", "false")
    assert publish(MIXED) == []
    assert step.read_bytes().decode() == "earlier\n" + markdown_summary(MIXED) + "\n"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert publish(MIXED, run_id="r2") == github_annotations(MIXED)
    assert step.read_bytes().decode().endswith(markdown_summary(MIXED, run_id="r2") + "\n")


def test_metric_thresholds():
    thresholds = {  # those without an absolute fail level first: they are skipped, not the end
        "xai/integrated_gradients/steps_mean": {"fail": 0.5, "relative": True},
        "xai/integrated_gradients/seconds": {"warn": 10.0},
        NAME: {"warn": 0.25, "fail": 0.5},
        "xai/probe/accuracy": {"fail": 0.75, "higher_is_better": True},
    }
    out = metric_thresholds(_config(["integrated_gradients"], thresholds))
    assert list(out) == [NAME, "xai/probe/accuracy"]
    assert (out[NAME].threshold, out[NAME].greater_is_better) == (0.5, False)
    assert (out["xai/probe/accuracy"].threshold, out["xai/probe/accuracy"].greater_is_better) == (0.75, True)
    assert metric_thresholds(_config(["integrated_gradients"])) == {}


# --------------------------------------------------------------------------------------------------
# Attribution drift against the baseline model


def _ranks(row: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties sharing their mean rank, by counting (no sorting library)."""
    return np.array([(row < v).sum() + ((row == v).sum() + 1) / 2 for v in row])


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(np.abs(a)), _ranks(np.abs(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / math.sqrt((ra**2).sum() * (rb**2).sum()))


def test_drift_rank_correlation_by_hand():
    # |a| ranks 1 2 3 4; |b| ranks 1 2 4 3 -> rho = 1 - 6 * 2 / (4 * 15) = 0.8
    a = np.array([[1.0, -2.0, 3.0, -4.0]])
    b = np.array([[0.1, 0.2, -0.9, 0.5]])
    drift = attribution_drift(a, b, top_fraction=0.5)
    np.testing.assert_allclose(drift["drift_rank_correlation"], [0.8], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(drift["drift_topk_overlap"], [1.0])  # top 2: {3, 2} both times


def test_drift_top_k_overlap_by_hand():
    # 10 features; top 30% = 3 features by |attribution|
    a = np.array([[10.0, -9.0, 8.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])  # top: 0, 1, 2
    b = np.array([[-10.0, 1.0, 8.0, 9.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])  # top: 0, 3, 2
    drift = attribution_drift(a, b, top_fraction=0.3)
    np.testing.assert_allclose(drift["drift_topk_overlap"], [2 / 3], rtol=0, atol=1e-15)
    assert drift["drift_topk_overlap"].dtype == np.float64
    # k = round(0.1 * 10) = 1: the single largest feature agrees
    np.testing.assert_array_equal(attribution_drift(a, b)["drift_topk_overlap"], [1.0])
    # k = round(0.45 * 10) = 4 (top 4: {0, 1, 2, 9} vs {0, 3, 2, 9}): 3 of 4
    np.testing.assert_allclose(attribution_drift(a, b, top_fraction=0.45)["drift_topk_overlap"], [0.75])
    # k never drops below 1
    np.testing.assert_array_equal(attribution_drift(a, b, top_fraction=0.01)["drift_topk_overlap"], [1.0])
    # k = 10: every feature, full overlap
    np.testing.assert_array_equal(attribution_drift(a, b, top_fraction=1.0)["drift_topk_overlap"], [1.0])


def test_drift_against_ranks_computed_here():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(4, 3, 5, 6))
    b = a + rng.normal(scale=0.8, size=a.shape)
    b[1] = rng.normal(size=a.shape[1:])  # one sample unrelated
    b[2, 0, 0, :3] = b[2, 0, 0, 3:] = 0.5  # ties
    drift = attribution_drift(a.astype(np.float32), b)
    flat_a, flat_b = a.astype(np.float32).astype(np.float64).reshape(4, -1), b.reshape(4, -1)
    expected = [_spearman(x, y) for x, y in zip(flat_a, flat_b, strict=True)]
    np.testing.assert_allclose(drift["drift_rank_correlation"], expected, rtol=0, atol=1e-12)
    k = 9  # round(0.1 * 90)
    top = [set(np.argsort(-np.abs(x))[:k]) for x in (*flat_a, *flat_b)]
    overlap = [len(top[i] & top[4 + i]) / k for i in range(4)]
    np.testing.assert_allclose(drift["drift_topk_overlap"], overlap, rtol=0, atol=1e-15)
    assert drift["drift_rank_correlation"].shape == drift["drift_topk_overlap"].shape == (4,)


def test_drift_shape_mismatch():
    with pytest.raises(ValueError, match=re.escape("attribution shapes differ: (2, 3) vs (2, 4)")):
        attribution_drift(np.ones((2, 3)), np.ones((2, 4)))


def test_drift_metrics():
    per_sample = {
        "drift_rank_correlation": np.array([0.5, np.nan, 0.25, 1.0, np.inf]),
        "drift_topk_overlap": np.array([0.75, 0.5]),
        "empty": np.array([np.nan, -np.inf]),
    }
    assert drift_metrics(per_sample, "saliency") == {
        "xai/saliency/drift_rank_correlation_median": 0.5,
        "xai/saliency/drift_rank_correlation_min": 0.25,
        "xai/saliency/drift_topk_overlap_median": 0.625,
        "xai/saliency/drift_topk_overlap_min": 0.5,
    }
    assert drift_metrics({}, "saliency") == {}


# --------------------------------------------------------------------------------------------------
# What check_gate_config refuses, word for word


def test_a_metric_of_a_method_not_enabled_lists_the_enabled_methods():
    config = load_config(
        {
            "methods": {"integrated_gradients": {}, "occlusion": {}},
            "gate": {"thresholds": {"xai/saliency/seconds": {"fail": 1.0}}},
        }
    )
    with pytest.raises(ConfigError) as err:
        check_gate_config(config, has_baseline=False)
    assert str(err.value).endswith(
        "gate.thresholds names metric 'xai/saliency/seconds', but method 'saliency' is not enabled "
        "(enabled: integrated_gradients, occlusion)"
    )


def test_a_metric_with_no_close_name_lists_what_the_method_produces():
    config = load_config(
        {
            "methods": {"occlusion": {}},
            "gate": {"thresholds": {"xai/occlusion/zzzzzzzzzzzzzzzz": {"fail": 1.0}}},
        }
    )
    with pytest.raises(ConfigError) as err:
        check_gate_config(config, has_baseline=False)
    assert str(err.value).endswith(
        "which 'occlusion' as configured does not produce. It produces: "
        "xai/occlusion/drift_rank_correlation_median, xai/occlusion/drift_rank_correlation_min, "
        "xai/occlusion/drift_topk_overlap_median, xai/occlusion/drift_topk_overlap_min, "
        "xai/occlusion/object_mass_fraction_mean, xai/occlusion/samples, xai/occlusion/seconds"
    )


@pytest.mark.parametrize(
    ("methods", "checks_something"),
    [
        ({"integrated_gradients": {}}, True),
        ({"gradient_shap": {"multiply_by_inputs": True}}, True),
        # Without multiplying by the inputs GradientShap claims no completeness: nothing to check.
        ({"gradient_shap": {"multiply_by_inputs": False}}, False),
        ({"occlusion": {}}, False),
    ],
)
def test_a_gate_of_method_checks_alone_needs_a_method_with_a_check(methods, checks_something):
    config = load_config({"methods": methods, "gate": {"method_checks": True}})
    if checks_something:
        check_gate_config(config, has_baseline=False)
    else:
        with pytest.raises(ConfigError, match="the gate evaluates no check"):
            check_gate_config(config, has_baseline=False)


def test_check_gate_config_assumes_labels_and_masks_unless_told():
    # The library call without has_labels / has_masks checks the names only (labels and masks are
    # known once the probe set is loaded, which the command line passes in).
    config = load_config(
        {
            "methods": {"occlusion": {}},
            "gate": {
                "thresholds": {
                    "xai/probe/accuracy": {"fail": 0.5},
                    "xai/occlusion/object_mass_fraction_mean": {"fail": 0.2},
                }
            },
        }
    )
    check_gate_config(config, has_baseline=False)
    with pytest.raises(ConfigError, match="needs probe labels"):
        check_gate_config(config, has_baseline=False, has_labels=False)
    with pytest.raises(ConfigError, match="needs ground-truth masks"):
        check_gate_config(config, has_baseline=False, has_masks=False)


def test_a_missing_metric_does_not_stop_the_thresholds_after_it():
    config = load_config(
        {
            "methods": {"integrated_gradients": {}},
            "gate": {
                "method_checks": False,
                "thresholds": {
                    IG + "completeness_rel_error_max": {"fail": 0.1, "higher_is_better": False},
                    IG + "seconds": {"fail": 10.0, "higher_is_better": False},
                },
            },
        }
    )
    checks = judge({IG + "seconds": 2.0}, config).checks
    assert [(c.name, c.level) for c in checks] == [
        (IG + "completeness_rel_error_max", "fail"),
        (IG + "seconds", "pass"),
    ]
