"""``mlflow.models.evaluate`` with MLflow's standard model types, on a real sqlite tracking store.

A tabular MLP evaluated as ``model_type="classifier"`` is audited like an image model; every file
logged under ``xai/`` comes back in ``result.artifacts`` (keyed by its path in the run, extension
included); model types we cannot audit and non-PyTorch models are declined without breaking the
other evaluators.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import log_pytorch_model
from mlflow import MlflowClient
from mlflow.models.evaluation import EvaluationArtifact, EvaluationResult
from PIL import Image

from mlflow_xai.tracking.evaluator import XaiEvaluator

FAST = {"methods": {"integrated_gradients": {"n_steps": 8}}}
N_FEATURES, N_CLASSES, N_ROWS = 8, 3, 24


@pytest.fixture(scope="module")
def tabular():
    """A small MLP trained a few steps on generated rows whose class is the argmax of 3 features."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, N_FEATURES)).astype(np.float32)
    y = x[:, :N_CLASSES].argmax(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, N_CLASSES)
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(30):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        optimiser.step()
    model.eval()
    return model, x[-N_ROWS:], y[-N_ROWS:]


def _listed(client, run_id, path="xai"):
    """Every file under ``path`` in the run, recursively, as paths relative to the run's root."""
    files = set()
    for info in client.list_artifacts(run_id, path):
        files |= _listed(client, run_id, info.path) if info.is_dir else {info.path}
    return files


def _evaluate(model_uri, data, targets, model_type, config=FAST):
    with mlflow.start_run() as run:
        result = mlflow.models.evaluate(
            model_uri,
            data=data,
            targets=targets,
            model_type=model_type,
            evaluators=["xai"],
            evaluator_config={"xai": config},
        )
    return run, result


def _assert_metrics_logged_once(client, run_id, result, n_samples):
    run = client.get_run(run_id)
    for name in (
        "xai/integrated_gradients/completeness_rel_error_median",
        "xai/integrated_gradients/completeness_rel_error_p95",
        "xai/integrated_gradients/seconds",
        "xai/probe/samples",
    ):
        assert isinstance(result.metrics[name], float), name
        assert run.data.metrics[name] == pytest.approx(result.metrics[name])
        assert len(client.get_metric_history(run_id, name)) == 1, name
    assert result.metrics["xai/probe/samples"] == float(n_samples)
    assert "xai.verdict" in run.data.tags


def _assert_artifacts_are_the_logged_files(client, run, result):
    """One EvaluationArtifact per logged file, keyed by its run path, whose URI is that file."""
    listed = _listed(client, run.info.run_id)
    assert len(listed) >= 10
    assert set(result.artifacts) == listed
    for key, artifact in result.artifacts.items():
        assert isinstance(artifact, EvaluationArtifact), key
        assert artifact.uri == f"{run.info.artifact_uri}/{key}"
    summary = result.artifacts["xai/summary.json"].content
    assert summary["metrics"] == pytest.approx(result.metrics)
    assert "<html" in result.artifacts["xai/report.html"].content.lower()
    assert "methods:" in result.artifacts["xai/config.yaml"].content
    per_sample = result.artifacts["xai/per_sample.csv"].content
    assert isinstance(per_sample, pd.DataFrame)
    return per_sample


def test_tabular_mlp_as_classifier(tracking_store, tabular, tmp_path):
    model, x, y = tabular
    model_uri = log_pytorch_model(model, x[:2], "pickle")
    run, result = _evaluate(model_uri, x, y, "classifier")

    client = MlflowClient()
    _assert_metrics_logged_once(client, run.info.run_id, result, N_ROWS)
    per_sample = _assert_artifacts_are_the_logged_files(client, run, result)
    assert len(per_sample) == N_ROWS
    masks = result.artifacts["xai/integrated_gradients/masks.npz"].content
    assert masks["attributions"].shape == (N_ROWS, N_FEATURES)
    assert np.isfinite(masks["attributions"].astype(np.float64)).all()
    features = result.artifacts["xai/integrated_gradients/feature_attributions.csv"].content
    assert sorted(features["rank"]) == list(range(1, N_FEATURES + 1))
    chart = result.artifacts["xai/integrated_gradients/feature_attributions.png"].content
    assert isinstance(chart, Image.Image) and chart.size[0] > 0

    # MLflow's own save/load: it writes only content already loaded, so every artifact must have it.
    result.save(tmp_path / "saved")
    loaded = EvaluationResult.load(tmp_path / "saved")
    assert set(loaded.artifacts) == set(result.artifacts)
    assert loaded.artifacts["xai/summary.json"].content == result.artifacts["xai/summary.json"].content
    again = loaded.artifacts["xai/integrated_gradients/masks.npz"].content
    assert np.array_equal(again["attributions"], masks["attributions"])


def test_tabular_dataframe_with_a_target_column(tracking_store, tabular):
    """``data=frame, targets="label"``: the feature columns are audited, the label column is not."""
    model, x, y = tabular
    model_uri = log_pytorch_model(model, x[:2], "pickle")
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(N_FEATURES)]).assign(label=y)
    run, result = _evaluate(model_uri, frame, "label", "classifier")
    assert result.metrics["xai/probe/samples"] == float(N_ROWS)
    features = result.artifacts["xai/integrated_gradients/feature_attributions.csv"].content
    assert set(features["feature"]) == {f"f{i}" for i in range(N_FEATURES)}


@pytest.mark.parametrize("model_type", ["image_classifier", "classifier"])
def test_image_model_returns_its_artifacts(tracking_store, small_cnn, shapes16, model_type):
    """An image model: as ``image_classifier``, or as ``classifier`` with its shape from the signature."""
    _, probe = shapes16
    probe = probe.subset(slice(0, 6))
    model_uri = log_pytorch_model(small_cnn, probe.images[:2], "pickle")
    config = {**FAST, "artifacts": {"sheet_samples": 2}}
    run, result = _evaluate(model_uri, probe.images.reshape(len(probe), -1), probe.labels, model_type, config)

    client = MlflowClient()
    _assert_metrics_logged_once(client, run.info.run_id, result, 6)
    _assert_artifacts_are_the_logged_files(client, run, result)
    masks = result.artifacts["xai/integrated_gradients/masks.npz"].content
    assert masks["attributions"].shape == (6, 3, 16, 16)
    assert masks["ids"].tolist() == [f"{i:06d}" for i in range(6)]
    sheet = result.artifacts["xai/integrated_gradients/sheet.png"].content
    assert isinstance(sheet, Image.Image) and sheet.size[0] > 0


def test_can_evaluate_accepts_classifiers_and_declines_the_rest_without_torch():
    """``can_evaluate`` runs for every evaluation of every model (``evaluators=None``): it answers
    from the model type alone, fast, and imports neither torch nor captum."""
    script = textwrap.dedent(
        """
        import sys, time
        from mlflow_xai.evaluator import XaiEvaluator
        start = time.perf_counter()
        answers = {
            str(t): XaiEvaluator.can_evaluate(model_type=t, evaluator_config={})
            for t in ("classifier", "image_classifier", "regressor", "question-answering", "text",
                      "text-summarization", "retriever", None)
        }
        seconds = time.perf_counter() - start
        print(sorted(k for k, v in answers.items() if v))
        print(any(m in sys.modules for m in ("torch", "captum", "mlflow_xai._evaluate")))
        print(seconds < 0.05)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[:3] == ["['classifier', 'image_classifier']", "False", "True"]


def test_regressor_is_declined_with_a_reason(tracking_store, tabular, caplog):
    """A configured xai evaluator that declines says what was wrong and which model types it audits."""
    model, x, _ = tabular
    model_uri = log_pytorch_model(model, x[:2], "pickle")
    assert XaiEvaluator.can_evaluate(model_type="regressor", evaluator_config=FAST) is False
    with caplog.at_level(logging.WARNING, logger="mlflow_xai"):
        with pytest.raises(Exception, match="could not be evaluated by any of the registered evaluators"):
            _evaluate(model_uri, x, x[:, 0].astype(np.float64), "regressor")
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("mlflow_xai")]
    assert any("'regressor'" in m and "'classifier'" in m and "'image_classifier'" in m for m in messages)
    run = mlflow.last_active_run()
    assert _listed(MlflowClient(), run.info.run_id) == set()


def test_sklearn_classifier_with_all_evaluators_gets_the_default_result(tracking_store, tmp_path):
    """With ``evaluators=None`` MLflow asks xai too for a classifier: xai is called, declines the
    sklearn model (returns None) before loading its heavy half, and MLflow's default result stands."""
    script = textwrap.dedent(
        """
        import sys
        import mlflow
        import numpy as np
        import pandas as pd
        from mlflow import MlflowClient
        from sklearn.linear_model import LogisticRegression
        from mlflow_xai.evaluator import XaiEvaluator

        answers = []
        original = XaiEvaluator.evaluate
        def spy(self, **kwargs):
            answers.append(original(self, **kwargs))
            return answers[-1]
        XaiEvaluator.evaluate = spy

        rng = np.random.default_rng(0)
        X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
        y = (X["a"] > 0).astype(int)
        with mlflow.start_run() as run:
            info = mlflow.sklearn.log_model(
                LogisticRegression().fit(X, y), name="model", pip_requirements=["scikit-learn"]
            )
            result = mlflow.models.evaluate(
                info.model_uri, X.assign(y=y), targets="y", model_type="classifier", evaluators=None
            )
        client = MlflowClient()
        logged = client.get_run(run.info.run_id).data
        print("CALLED", answers)
        print("XAI", any(k.startswith("xai") for k in [*result.metrics, *result.artifacts, *logged.tags]))
        files = [a.path for a in client.list_artifacts(run.info.run_id)]
        print("XAI_FILES", [path for path in files if path.startswith("xai")])
        print("ACC", result.metrics["accuracy_score"] == logged.metrics["accuracy_score"])
        print("ARTIFACTS", "confusion_matrix" in result.artifacts)
        print("LOADED", "mlflow_xai._evaluate" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert {k: lines.get(k) for k in ("CALLED", "XAI", "XAI_FILES", "ACC", "ARTIFACTS", "LOADED")} == {
        "CALLED": "[None]",
        "XAI": "False",
        "XAI_FILES": "[]",
        "ACC": "True",
        "ARTIFACTS": "True",
        "LOADED": "False",
    }
