"""gate.seed_runs: the spread of each metric over seeds, and thresholds that lie within it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from mlflow_xai import audit
from mlflow_xai.ci.gate import judge
from mlflow_xai.config import load_config
from mlflow_xai.config.loading import shifted_seeds
from mlflow_xai.errors import ConfigError
from mlflow_xai.report.seed_noise import metric_spread


def test_spread_is_largest_minus_smallest_over_runs_without_timings():
    runs = [
        {"xai/a/x_mean": 0.5, "xai/a/seconds": 1.0, "xai/probe/samples": 8.0, "xai/a/y_mean": 1.0},
        {"xai/a/x_mean": 0.2, "xai/a/seconds": 9.0, "xai/probe/samples": 8.0, "xai/a/y_mean": float("nan")},
        {"xai/a/x_mean": 0.4, "xai/a/seconds": 2.0, "xai/probe/samples": 8.0, "xai/a/y_mean": 1.0},
    ]
    assert metric_spread(runs) == {"xai/a/x_mean": pytest.approx(0.3)}
    assert metric_spread(runs[:1]) == {}


def test_shifted_seeds_move_every_seed_and_nothing_else():
    cfg = load_config(
        {
            "seed": 2,
            "methods": {"gradient_shap": {"seed": 3, "n_samples": 4}, "saliency": {}},
            "checks": {"deletion_insertion": {"seed": 5}, "randomisation": {"seed": 7}},
            "gate": {"seed_runs": 2, "thresholds": {"xai/saliency/seconds": {"fail": 100}}},
        }
    )
    moved = shifted_seeds(cfg, 2)
    assert moved.seed == 4
    assert moved.methods.gradient_shap.seed == 5
    assert moved.checks.deletion_insertion.seed == 7
    assert moved.checks.randomisation.seed == 9
    assert moved.gate.seed_runs == 1
    assert moved.methods.gradient_shap.n_samples == 4
    assert moved.gate.thresholds == cfg.gate.thresholds
    assert cfg.seed == 2 and cfg.gate.seed_runs == 2  # the original is left as it was


def test_seed_runs_must_be_positive():
    with pytest.raises(ConfigError):
        load_config({"gate": {"seed_runs": 0}})


@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3)).double()
    x = np.random.default_rng(0).normal(size=(10, 6))
    return model, x


def test_the_spread_is_the_gap_to_an_audit_run_by_hand_with_the_next_seeds(linear):
    model, x = linear
    # With input noise (stdevs) GradientShap's attributions are random even on a linear model.
    methods = {"integrated_gradients": {"n_steps": 16}, "gradient_shap": {"n_samples": 4, "stdevs": 0.5}}
    checks = {"deletion_insertion": {"steps": 3}}
    report = audit(
        model, x, {"methods": methods, "checks": checks, "gate": {"seed_runs": 2}, "batch_size": 4}
    )
    by_hand = audit(
        model,
        x,
        {
            "seed": 1,
            "methods": {
                "integrated_gradients": {"n_steps": 16},
                "gradient_shap": {"n_samples": 4, "stdevs": 0.5, "seed": 1},
            },
            "checks": {"deletion_insertion": {"steps": 3, "seed": 1}},
            "batch_size": 4,
        },
    ).metrics()
    first = report.metrics()
    spread = report.seed_spread
    for name in (
        "xai/gradient_shap/deletion_auc_mean",
        "xai/integrated_gradients/deletion_random_auc_mean",
    ):
        assert spread[name] == pytest.approx(abs(first[name] - by_hand[name]), abs=1e-12)
        assert spread[name] > 0
    # IG's attributions draw nothing at random: none of its own numbers move.
    assert spread["xai/integrated_gradients/completeness_rel_error_median"] == 0.0
    assert spread["xai/integrated_gradients/deletion_auc_mean"] == 0.0
    assert not any(name.endswith("seconds") for name in spread)


def _gate(threshold: dict) -> object:
    return load_config(
        {"methods": {"saliency": {}}, "gate": {"thresholds": {"xai/saliency/x_mean": threshold}}}
    )


@pytest.mark.parametrize(
    ("threshold", "value", "spread", "flagged"),
    [
        ({"fail": 0.52}, 0.50, 0.05, True),  # passes, but 0.02 from the level with 0.05 of noise
        ({"fail": 0.52}, 0.50, 0.01, False),
        ({"fail": 0.48}, 0.50, 0.05, True),  # fails, within the noise
        ({"warn": 0.6, "fail": 0.9}, 0.50, 0.11, True),  # the warn level counts too
        ({"warn": 0.6, "fail": 0.9}, 0.50, 0.09, False),
    ],
)
def test_thresholds_within_the_seed_spread_are_flagged(threshold, value, spread, flagged, monkeypatch):
    import mlflow_xai.ci.gate as gate

    monkeypatch.setattr(gate, "metric_catalogue", lambda config: {"xai/saliency/x_mean": ""})
    metrics = {"xai/saliency/x_mean": value}
    plain = judge(metrics, _gate(threshold))
    noisy = judge(metrics, _gate(threshold), seed_spread={"xai/saliency/x_mean": spread})
    assert noisy.status == plain.status  # the verdict stands; only the note is added
    check = noisy.checks[0]
    assert (check.seed_spread is not None) is flagged
    assert bool(noisy.noise_warnings) is flagged
    assert ("within the seed noise" in check.message) is flagged
    assert noisy.to_dict()["noise_warnings"] == noisy.noise_warnings


def test_relative_thresholds_compare_the_spread_relative_to_the_baseline(monkeypatch):
    import mlflow_xai.ci.gate as gate

    monkeypatch.setattr(gate, "metric_catalogue", lambda config: {"xai/saliency/x_mean": ""})
    cfg = _gate({"fail": 0.1, "relative": True})  # at most 10% worse (higher) than the baseline
    metrics, baseline = {"xai/saliency/x_mean": 1.05}, {"xai/saliency/x_mean": 1.0}
    # 5% worse, 5 points from the 10% level: a spread of 0.06 (6% of the baseline) reaches it.
    near = judge(metrics, cfg, baseline_metrics=baseline, seed_spread={"xai/saliency/x_mean": 0.06})
    far = judge(metrics, cfg, baseline_metrics=baseline, seed_spread={"xai/saliency/x_mean": 0.04})
    assert near.noise_warnings and not far.noise_warnings
    assert near.status == far.status == "pass"


def test_validate_config_names_the_thresholds_that_move_with_the_seeds(tmp_path, capsys, monkeypatch):
    from mlflow_xai.cli.commands import main
    from mlflow_xai.report.seed_noise import seeded_thresholds

    text = (
        "methods: {integrated_gradients: {}, gradient_shap: {}}\n"
        "checks: {deletion_insertion: {}}\n"
        "gate:\n  thresholds:\n"
        "    xai/integrated_gradients/deletion_margin_mean: {fail: 0.0, higher_is_better: true}\n"
        "    xai/integrated_gradients/deletion_auc_mean: {fail: 0.9}\n"
        "    xai/gradient_shap/deletion_auc_mean: {fail: 0.9}\n"
    )
    (tmp_path / "c.yaml").write_text(text, encoding="utf-8")
    config = load_config(tmp_path / "c.yaml")
    assert seeded_thresholds(config) == [
        "xai/integrated_gradients/deletion_margin_mean",  # the random control
        "xai/gradient_shap/deletion_auc_mean",  # a method that draws at random
    ]
    assert main(["validate-config", str(tmp_path / "c.yaml")]) == 0
    out = capsys.readouterr().out
    assert "note: 2 gate threshold(s) hold metrics that move with the seeds" in out
    (tmp_path / "d.yaml").write_text(text + "  seed_runs: 2\n", encoding="utf-8")
    assert main(["validate-config", str(tmp_path / "d.yaml")]) == 0
    assert "move with the seeds" not in capsys.readouterr().out
