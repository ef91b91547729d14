"""``mlflow-xai`` as a CI job runs it: exit codes, one-line errors, JUnit, summary and run tags agree."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import mlflow
import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import log_pytorch_model
from mlflow import MlflowClient

from mlflow_xai.cli import main


def _cli(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "mlflow_xai.cli", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


class ConstantModel(nn.Module):
    """Ignores its input: every baseline is degenerate, so completeness cannot be judged."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.1, 0.2, 0.3, 0.4]))

    def forward(self, x):
        return self.bias.expand(len(x), 4) + 0.0 * x.flatten(1).sum(1, keepdim=True)


class BorderModel(nn.Module):
    """The good CNN, but it sees only a 2-pixel frame around the image, never the object."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        frame = torch.ones(1, 1, 16, 16)
        frame[..., 2:-2, 2:-2] = 0.0
        self.register_buffer("frame", frame)

    def forward(self, x):
        return self.inner(x * self.frame)


GATE = """
max_samples: 6
methods:
  integrated_gradients:
    n_steps: auto
    max_steps: 1025
checks:
  completeness:
    tolerance: 0.01
artifacts:
  sheet_samples: 2
gate:
  thresholds:
    xai/integrated_gradients/converged_fraction:
      fail: 1.0
      higher_is_better: true
"""

OBJECT = (
    GATE
    + """    xai/integrated_gradients/object_mass_fraction_mean:
      fail: 0.05
      higher_is_better: true
"""
)


@pytest.fixture
def probe_file(shapes16, tmp_path):
    _, probe = shapes16
    path = tmp_path / "probe.npz"
    np.savez(path, inputs=probe.images[:6], labels=probe.labels[:6], masks=probe.masks[:6], ids=probe.ids[:6])
    return str(path)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_good_model_passes_and_outputs_agree(
    tracking_store, small_cnn, shapes16, probe_file, tmp_path, monkeypatch
):
    """Run as a CI job runs it: a subprocess, on GitHub Actions, with JUnit and a summary."""
    _, probe = shapes16
    uri = log_pytorch_model(small_cnn, probe.images[:2])
    config = _write(tmp_path, "gate.yaml", OBJECT)
    env = {
        **__import__("os").environ,
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step.md"),
    }
    out = _cli(
        "audit",
        "--model-uri",
        uri,
        "--probe",
        probe_file,
        "--config",
        config,
        "--experiment",
        "ci",
        "--junit",
        "junit.xml",
        "--summary",
        "summary.md",
        "--output-dir",
        "out",
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "gate: pass" in out.stdout and "::error" not in out.stdout
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "0"
    assert {c.get("name") for c in suite.findall("testcase")} == {
        "integrated_gradients.completeness",
        "xai/integrated_gradients/converged_fraction",
        "xai/integrated_gradients/object_mass_fraction_mean",
    }
    assert "### mlflow-xai gate: PASS" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "summary.md").read_text() in (tmp_path / "step.md").read_text()
    (run,) = mlflow.search_runs(experiment_names=["ci"], output_format="list")
    assert run.data.tags["xai.gate"] == "pass"
    gate = json.loads((tmp_path / "out").joinpath("summary.json").read_text())
    assert gate["metrics"]["xai/integrated_gradients/converged_fraction"] == 1.0
    local = MlflowClient().download_artifacts(run.info.run_id, "xai/gate.json", str(tmp_path))
    assert json.loads(open(local).read())["status"] == "pass"
    summary = json.loads(
        open(MlflowClient().download_artifacts(run.info.run_id, "xai/summary.json", str(tmp_path))).read()
    )
    assert [c["name"] for c in summary["gate"]["checks"]] == [
        c.get("name") for c in suite.findall("testcase")
    ]
    html = open(MlflowClient().download_artifacts(run.info.run_id, "xai/report.html", str(tmp_path))).read()
    assert "<h2>Gate</h2>" in html and "xai/integrated_gradients/object_mass_fraction_mean" in html


def test_model_that_ignores_the_object_fails(
    tracking_store, small_cnn, probe_file, shapes16, tmp_path, capsys
):
    _, probe = shapes16
    uri = log_pytorch_model(BorderModel(small_cnn), probe.images[:2])
    config = _write(tmp_path, "gate.yaml", OBJECT)
    code = main(["audit", "--model-uri", uri, "--probe", probe_file, "--config", config, "--junit", "j.xml"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  xai/integrated_gradients/object_mass_fraction_mean" in out
    assert "gate: fail" in out
    suite = ET.parse("j.xml").getroot().find("testsuite")
    failed = [c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None]
    assert failed == ["xai/integrated_gradients/object_mass_fraction_mean"]


def test_model_with_only_degenerate_baselines_fails(tracking_store, probe_file, shapes16, tmp_path, capsys):
    _, probe = shapes16
    uri = log_pytorch_model(ConstantModel(), probe.images[:2])
    config = _write(tmp_path, "gate.yaml", "methods:\n  integrated_gradients:\n    n_steps: 8\n")
    code = main(["audit", "--model-uri", uri, "--probe", probe_file, "--config", config, "--experiment", "x"])
    out = capsys.readouterr().out
    assert code == 1
    assert "every one of 6 samples has a degenerate baseline" in out
    (run,) = mlflow.search_runs(experiment_names=["x"], output_format="list")
    assert run.data.tags["xai.gate"] == "fail"


def test_a_dead_model_fails_the_shipped_gate_with_the_reason(tracking_store, probe_file, shapes16, capsys):
    # Every baseline degenerate: the gate's threshold metrics have no value. That is the model's
    # failure (exit 1, a JUnit failure that says why), not a config error (exit 2).
    _, probe = shapes16
    uri = log_pytorch_model(ConstantModel(), probe.images[:2])
    shipped = str(__import__("pathlib").Path(__file__).parents[1] / "configs/ci-gate.yaml")
    args = ["audit", "--model-uri", uri, "--probe", probe_file, "--config", shipped]
    code = main([*args, "--experiment", "dead", "--junit", "dead.xml"])
    assert code == 1, capsys.readouterr().err
    suite = ET.parse("dead.xml").getroot().find("testsuite")
    failures = {c.get("name"): c.find("failure") for c in suite.findall("testcase")}
    p95 = failures["xai/integrated_gradients/completeness_rel_error_p95"]
    assert p95 is not None and "every one of 6 samples has a degenerate baseline" in p95.get("message")
    assert failures["integrated_gradients.completeness"] is not None


def test_an_audit_that_checks_nothing_is_unchecked_not_an_error(
    tracking_store, small_cnn, probe_file, shapes16, tmp_path, capsys
):
    # Captum's tutorial audits occlusion alone: no method with a check and no gate section.
    _, probe = shapes16
    uri = log_pytorch_model(small_cnn, probe.images[:2])
    config = _write(tmp_path, "occ.yaml", "methods:\n  occlusion: {}\nartifacts:\n  sheet_samples: 1\n")
    out_dir = tmp_path / "out"
    args = ["audit", "--model-uri", uri, "--probe", probe_file, "--config", config, "--experiment", "u"]
    code = main([*args, "--output-dir", str(out_dir), "--junit", "u.xml"])
    out = capsys.readouterr().out
    assert code == 0
    assert "nothing was checked" in out and "gate: unchecked" in out
    (run,) = mlflow.search_runs(experiment_names=["u"], output_format="list")
    assert run.data.tags["xai.gate"] == "unchecked" and run.data.tags["xai.verdict"] == "unchecked"
    assert "xai/occlusion/seconds" in run.data.metrics
    assert "unchecked" in (out_dir / "report.html").read_text()
    assert json.loads((out_dir / "gate.json").read_text())["status"] == "unchecked"


def test_gate_rejudges_a_run_without_recomputing(
    tracking_store, small_cnn, probe_file, shapes16, tmp_path, capsys
):
    _, probe = shapes16
    uri = log_pytorch_model(small_cnn, probe.images[:2])
    loose = _write(tmp_path, "loose.yaml", GATE)
    assert (
        main(["audit", "--model-uri", uri, "--probe", probe_file, "--config", loose, "--experiment", "g"])
        == 0
    )
    (run,) = mlflow.search_runs(experiment_names=["g"], output_format="list")
    steps = run.data.metrics["xai/integrated_gradients/steps_max"]
    strict = _write(
        tmp_path,
        "strict.yaml",
        GATE + f"    xai/integrated_gradients/steps_max:\n      fail: {steps - 1}\n",
    )
    capsys.readouterr()
    assert main(["gate", "--run-id", run.info.run_id, "--config", strict, "--junit", "j.xml"]) == 1
    assert (
        f"xai/integrated_gradients/steps_max = {steps:.4g} is above {steps - 1:g}" in capsys.readouterr().out
    )
    assert MlflowClient().get_run(run.info.run_id).data.tags["xai.gate"] == "fail"
    assert main(["gate", "--run-id", run.info.run_id, "--config", loose]) == 0
    assert MlflowClient().get_run(run.info.run_id).data.tags["xai.gate"] == "pass"


def test_baseline_model_drift_and_relative_thresholds(
    tracking_store, small_cnn, probe_file, shapes16, tmp_path
):
    _, probe = shapes16
    uri = log_pytorch_model(small_cnn, probe.images[:2])
    config = _write(
        tmp_path,
        "drift.yaml",
        GATE + "    xai/integrated_gradients/steps_mean:\n      fail: 0.0\n      relative: true\n"
        "    xai/integrated_gradients/drift_rank_correlation_median:\n      fail: 0.999\n"
        "      higher_is_better: true\n",
    )
    code = main(
        [
            "audit",
            "--model-uri",
            uri,
            "--baseline-model-uri",
            uri,
            "--probe",
            probe_file,
            "--config",
            config,
            "--experiment",
            "d",
        ]
    )
    assert code == 0
    (run,) = mlflow.search_runs(experiment_names=["d"], output_format="list")
    # The same model against itself: identical attributions, nothing worse than the baseline.
    assert run.data.metrics["xai/integrated_gradients/drift_rank_correlation_median"] == pytest.approx(1.0)
    assert run.data.metrics["xai/integrated_gradients/drift_topk_overlap_min"] == pytest.approx(1.0)
    assert main(["gate", "--run-id", run.info.run_id, "--config", config]) == 0


@pytest.mark.parametrize(
    ("config_text", "probe_name", "message"),
    [
        (
            "methods:\n  integrated_gradients:\n    n_steps: '50'\n",
            None,
            "methods.integrated_gradients.n_steps must be an integer >= 1",
        ),
        ("methods: [1, 2]\n", None, "methods must be a mapping"),
        (
            "gate:\n  thresholds:\n    xai/occlusion/seconds:\n      fail: 1.0\n",
            None,
            "gate.thresholds names metric 'xai/occlusion/seconds', but method 'occlusion' is not enabled",
        ),
        (
            "gate:\n  thresholds:\n    xai/integrated_gradients/completness_rel_error_p95:\n"
            "      fail: 0.1\n",
            None,
            "which 'integrated_gradients' as configured does not produce; did you mean "
            "'xai/integrated_gradients/completeness_rel_error_p95'?",
        ),
        (
            "gate:\n  thresholds:\n    xai/integrated_gradients/object_mass_fraction_mean:\n"
            "      fail: 0.1\n",
            "nomask.npz",
            "which needs ground-truth masks in the probe set",
        ),
        ("methods:\n  saliency: {}\ngate:\n  fail_on: [fail]\n", None, "the gate evaluates no check"),
        ("seed: 1\n", "missing.npz", "probe file"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tracking_store, small_cnn, shapes16, probe_file, tmp_path, capsys, config_text, probe_name, message
):
    _, probe = shapes16
    uri = log_pytorch_model(small_cnn, probe.images[:2])
    config = _write(
        tmp_path,
        "c.yaml",
        config_text + "methods:\n  integrated_gradients:\n    n_steps: 4\n"
        if "methods" not in config_text
        else config_text,
    )
    probe_arg = str(tmp_path / probe_name) if probe_name else probe_file
    if probe_name == "nomask.npz":
        np.savez(probe_arg, inputs=probe.images[:6], labels=probe.labels[:6])
    capsys.readouterr()  # only what the command itself prints
    code = main(
        ["audit", "--model-uri", uri, "--probe", probe_arg, "--config", config, "--experiment", "bad"]
    )
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlflow-xai: error: "), err
    assert message in lines[0]
    # Nothing half-written: a bad input logs no run.
    experiment = mlflow.get_experiment_by_name("bad")
    assert experiment is None or not mlflow.search_runs([experiment.experiment_id], output_format="list")


def test_demo_with_a_bad_config_exits_2_before_training(tracking_store, tmp_path, capsys):
    config = _write(tmp_path, "c.yaml", "max_samples: -1\n")
    capsys.readouterr()
    assert main(["demo", "--config", config]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "mlflow-xai: error: invalid config: max_samples must be an integer >= 1, got -1"
    ]
    assert "training" not in captured.out
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_an_experiment_created_by_a_concurrent_audit_is_taken_not_an_error(tracking_store, monkeypatch):
    # The race of two audits started at once: both look the experiment up before either creates it.
    from mlflow_xai.cli.audit import _experiment_id

    existing = MlflowClient().create_experiment("raced")  # the other audit won the race
    lookup = MlflowClient.get_experiment_by_name
    calls = []

    def stale_first_lookup(self, name):
        calls.append(name)
        return None if len(calls) == 1 else lookup(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", stale_first_lookup)
    assert _experiment_id("raced") == existing
    assert len(calls) == 2


def test_bad_config_in_a_subprocess_has_no_traceback(tmp_path):
    config = _write(tmp_path, "c.yaml", "methods:\n  integrated_gradient: {}\n")
    out = _cli("validate-config", config, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "mlflow-xai: error: invalid config: unknown key 'integrated_gradient' in methods; valid keys: "
        + ", ".join(sorted(__import__("mlflow_xai.config", fromlist=["x"]).MethodsConfig.model_fields))
    ]
    good = _cli(
        "validate-config",
        str(__import__("pathlib").Path(__file__).parents[1] / "configs/ci-gate.yaml"),
        cwd=tmp_path,
    )
    assert good.returncode == 0 and "valid" in good.stdout


def test_non_pytorch_or_missing_model_exits_2(tracking_store, probe_file, capsys):
    from sklearn.linear_model import LogisticRegression

    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            LogisticRegression().fit(np.random.rand(10, 3), np.arange(10) % 2),
            name="model",
            pip_requirements=["scikit-learn"],
        )
    assert main(["audit", "--model-uri", info.model_uri, "--probe", probe_file]) == 2
    assert "is not a PyTorch model (its flavors: python_function, sklearn)" in capsys.readouterr().err
    assert main(["audit", "--model-uri", "runs:/0123456789abcdef/model", "--probe", probe_file]) == 2
    assert "cannot load model 'runs:/0123456789abcdef/model'" in capsys.readouterr().err


def test_sigterm_marks_the_run_failed_and_resume_finishes_it(tracking_store, small_cnn, shapes16, tmp_path):
    import os
    import signal
    import time

    _, probe = shapes16
    uri = log_pytorch_model(small_cnn, probe.images[:2])
    np.savez(tmp_path / "probe.npz", inputs=probe.images[:24], labels=probe.labels[:24], ids=probe.ids[:24])
    config = _write(
        tmp_path,
        "slow.yaml",
        "batch_size: 2\nmethods:\n  integrated_gradients:\n    n_steps: 1024\n"
        "checks:\n  completeness:\n    tolerance: 100.0\n",
    )
    args = ["audit", "--model-uri", uri, "--probe", "probe.npz", "--config", config, "--experiment", "r"]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}  # the user cache directory
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow_xai.cli", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    cache = tmp_path / "xdg" / "mlflow-xai" / "batches"
    deadline = time.monotonic() + 240
    while not (cache.exists() and len(list(cache.glob("*/batch-*.npz"))) >= 2):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no batch finished in time"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1] == "mlflow-xai: error: interrupted"
    hint = err.strip().splitlines()[-2]
    assert hint.startswith("mlflow-xai: ") and f"kept in {cache}" in hint
    assert hint.endswith("continue with: mlflow-xai " + " ".join(args) + " --resume")
    assert not (tmp_path / ".mlflow-xai-cache").exists()  # nothing left in the working directory
    (failed,) = mlflow.search_runs(experiment_names=["r"], output_format="list")
    assert failed.info.status == "FAILED"
    assert failed.data.tags["xai.status"] == "running"
    assert not [k for k in failed.data.metrics if k.startswith("xai/")]  # nothing half-logged
    finished = len(list(cache.glob("*/batch-*.npz")))
    assert 2 <= finished < 12

    resumed = _cli(*args, "--resume", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(cache.glob("*/batch-*.npz"))  # a finished audit leaves no cache behind
    fresh = _cli(*args, cwd=tmp_path, env=env)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    runs = mlflow.search_runs(
        experiment_names=["r"], output_format="list", order_by=["attributes.start_time"]
    )
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED", "FINISHED"]
    strip = lambda r: {k: v for k, v in r.data.metrics.items() if not k.endswith("seconds")}  # noqa: E731
    assert strip(runs[1]) == strip(runs[2])  # the resumed audit matches an uninterrupted one


def test_example_model_passes_the_shipped_ci_gate(tracking_store, tmp_path, capsys):
    """The demo's CNN, trained as `make demo` trains it, passes configs/ci-gate.yaml as shipped; the
    demo itself then reuses it."""
    from pathlib import Path

    from mlflow_xai.cli.demo import shapes_split, train_and_log

    torch.set_num_threads(2)
    _, model_uri, held_out = train_and_log()
    assert held_out >= 0.9
    _, probe = shapes_split()
    np.savez(
        tmp_path / "probe.npz", inputs=probe.images, labels=probe.labels, masks=probe.masks, ids=probe.ids
    )
    config = Path(__file__).parents[1] / "configs" / "ci-gate.yaml"
    capsys.readouterr()
    code = main(
        [
            "audit",
            "--model-uri",
            model_uri,
            "--probe",
            str(tmp_path / "probe.npz"),
            "--config",
            str(config),
            "--experiment",
            "shipped",
            "--junit",
            str(tmp_path / "j.xml"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite.get("failures") == "0" and int(suite.get("tests")) == 3
    (run,) = mlflow.search_runs(experiment_names=["shipped"], output_format="list")
    assert run.data.tags["xai.gate"] in {"pass", "warn"}
    assert run.data.metrics["xai/integrated_gradients/converged_fraction"] == 1.0

    # `make demo` on the same store reuses that model, audits it and says where to look.
    assert main(["demo", "--config", str(config.with_name("default.yaml"))]) == 0
    out = capsys.readouterr().out
    assert "reusing the trained model" in out and "auditing 64 of 256 probe samples" in out, out
    assert "verdict: pass" in out and f"--backend-store-uri {tracking_store}" in out, out
    (audit_run,) = mlflow.search_runs(
        experiment_names=["mlflow-xai-demo"],
        filter_string="attributes.run_name = 'xai-audit'",
        output_format="list",
    )
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(audit_run.info.run_id, "xai")}
    assert "xai/report.html" in artifacts
