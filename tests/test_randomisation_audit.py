"""Model randomisation on a real audit: the known result on a ReLU CNN, and the report.

Kept apart from ``test_randomisation.py`` (the check's own math, which ``make mutation`` judges by):
the module fixture here runs a whole audit.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from helpers import relu_cnn

from mlflow_xai import audit
from mlflow_xai.artifacts.write import write_artifacts
from mlflow_xai.checks.randomisation import similarities, stayed_similar

# --- the known result (Adebayo et al. 2018) ------------------------------------------------------


@pytest.fixture(scope="module")
def cnn_report():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(8, 3, 16, 16)).astype(np.float32)
    x[:, :, 4:12, 4:12] += 1.0  # an object in the middle
    cfg = {
        "methods": {"guided_backprop": {}, "saliency": {}, "integrated_gradients": {"n_steps": 16}},
        "checks": {"randomisation": {}, "deletion_insertion": {"steps": 4, "features": "pixels"}},
        "batch_size": 3,
    }
    model = relu_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = audit(model, x, cfg)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    return report


def test_guided_backprop_fails_and_ig_and_saliency_pass_on_a_relu_cnn(cnn_report):
    metrics = cnn_report.metrics()

    def similarity(name: str) -> float:
        return metrics[f"xai/{name}/randomisation_similarity_mean"]

    assert similarity("guided_backprop") >= 0.5
    assert metrics["xai/guided_backprop/randomisation_passed_fraction"] < 0.5
    for name in ("integrated_gradients", "saliency"):
        assert similarity(name) < 0.5
        assert metrics[f"xai/{name}/randomisation_passed_fraction"] > 0.5
    # Guided backprop's maps stay alike through the top of the network.
    cascade = cnn_report.methods["guided_backprop"].extras["randomisation_cascade_spearman"]
    assert cascade.shape == (8, 7)
    assert stayed_similar(np.nanmean(cascade, axis=0), 0.5) >= 4


def test_the_report_names_the_stages_and_keeps_curves_out_of_metrics(cnn_report):
    assert len(cnn_report.randomisation_layers) == 7
    assert cnn_report.randomisation_layers[0] == "16"  # the linear head
    rows = cnn_report.per_sample_rows()
    assert "saliency/randomisation_similarity" in rows[0]
    assert not any("cascade" in key for key in rows[0])
    assert "xai/saliency/randomisation_seconds" in cnn_report.metrics()


def test_results_do_not_depend_on_the_batch_size(cnn_report):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(8, 3, 16, 16)).astype(np.float32)
    x[:, :, 4:12, 4:12] += 1.0
    cfg = {"methods": {"saliency": {}}, "checks": {"randomisation": {}}, "batch_size": 8}
    whole = audit(relu_cnn(), x, cfg)
    np.testing.assert_allclose(
        whole.methods["saliency"].extras["randomisation_cascade_spearman"],
        cnn_report.methods["saliency"].extras["randomisation_cascade_spearman"],
        atol=1e-6,
    )


def test_the_report_shows_the_verdicts_curves_and_maps(cnn_report, tmp_path):
    folder = write_artifacts(cnn_report, tmp_path / "xai")
    for figure in ("plots/randomisation.png", "plots/deletion_insertion.png"):
        assert (folder / figure).stat().st_size > 1000
    for name in ("guided_backprop", "saliency", "integrated_gradients"):
        assert (folder / name / "randomisation_cascade.png").is_file()
    stages = cnn_report.randomisation_maps["saliency"]
    assert stages.shape == (7, 3, 3, 16, 16)  # stages, the first samples, the input's shape
    # The figure's maps are the ones the check compared: the same similarity at every stage.
    trained = torch.from_numpy(cnn_report.methods["saliency"].attributions[:3].astype(np.float64))
    for k in range(7):
        rho = similarities(trained, torch.from_numpy(stages[k].astype(np.float64)))["spearman"]
        expected = cnn_report.methods["saliency"].extras["randomisation_cascade_spearman"][:3, k]
        np.testing.assert_allclose(rho.numpy(), expected, atol=1e-3)
    html = (folder / "report.html").read_text(encoding="utf-8")
    section = html[html.index("Sanity check") :]
    row = section[section.index("<td>guided_backprop</td>") :]
    assert row.index('class="badge fail"') < row.index("</tr>")
    row = section[section.index("<td>saliency</td>") :]
    assert row.index('class="badge pass"') < row.index("</tr>")
    assert html.count("data:image/png;base64") >= 6
