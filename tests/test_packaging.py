"""The distribution is installed as users get it: entry point, console script, version."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points, version

import mlflow_xai


def test_evaluator_entry_point_is_registered_and_loads():
    # Read through importlib.metadata: an import error cannot hide behind MLflow's warning here.
    found = [ep for ep in entry_points(group="mlflow.model_evaluator") if ep.name == "xai"]
    assert len(found) == 1, found
    cls = found[0].load()
    assert cls.__name__ == "XaiEvaluator"
    assert cls.can_evaluate(model_type="image_classifier", evaluator_config={})
    assert not cls.can_evaluate(model_type="regressor", evaluator_config={})


def test_mlflow_lists_the_evaluator():
    import mlflow

    assert "xai" in mlflow.models.list_evaluators()


def test_console_script_version_and_help():
    out = subprocess.run(
        [sys.executable, "-m", "mlflow_xai.cli", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"mlflow-xai {mlflow_xai.__version__}"
    assert version("mlflow-xai") == mlflow_xai.__version__
    help_text = subprocess.run(
        [sys.executable, "-m", "mlflow_xai.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "demo" in help_text


def test_importing_the_evaluator_does_not_import_torch():
    code = (
        "import sys, mlflow_xai.evaluator, mlflow_xai; print('torch' in sys.modules, 'captum' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
