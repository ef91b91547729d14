"""Adaptive IG and the IG figures on a small trained ReLU CNN: end to end, against an independent
reference.

Kept apart from tests/test_integrated_gradients.py and left out of ``make mutation``: the fixture
trains a CNN for a few seconds, time that mutmut's per-test clock never sees (it times test calls,
not fixtures), so every mutant these tests ran for would be cut short as a spurious timeout.
"""

from __future__ import annotations

import pytest
import torch
from helpers import rel_error as _rel_error
from helpers import target_column as _target_column

from mlflow_xai.artifacts.ig_figures import FIGURES, ig_convergence_figures
from mlflow_xai.attribution.adaptive import adaptive_integrated_gradients
from mlflow_xai.attribution.methods.integrated_gradients import integrated_gradients
from mlflow_xai.attribution.path_profiles import ig_path_profiles
from mlflow_xai.checks.convergence import step_change_rel_l2
from mlflow_xai.datasets import make_shapes
from mlflow_xai.datasets.cnn import train_shapes_cnn
from mlflow_xai.engine import audit


@pytest.fixture(scope="module")
def trained_relu_cnn():
    """A small ReLU CNN trained for a few seconds, and 12 held-out probe images (float32)."""
    torch.set_num_threads(2)
    model = train_shapes_cnn(make_shapes(384, size=16, seed=1), epochs=4, width=8)
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.from_numpy(make_shapes(12, size=16, seed=2).images)
    with torch.no_grad():
        target = model(x).argmax(1)
    return model, x, target


def test_adaptive_converged_samples_are_within_tolerance_of_an_independent_reference(
    trained_relu_cnn,
) -> None:
    model, x, target = trained_relu_cnn
    f, baseline = _target_column(model), torch.zeros_like(x)
    # Tolerances tighter than the defaults (which this small CNN meets at the first check), so
    # that samples need refining; the reference's own error is ~5e-4.
    tolerance = 0.005
    result = adaptive_integrated_gradients(
        f, x, baseline, target, step_change_tolerance=tolerance, completeness_tolerance=tolerance
    )
    # A different rule on a grid that shares no node with the nested trapezoid ones (but 1/2).
    reference = integrated_gradients(
        f, x, baseline, target, n_steps=1000, rule="midpoint", internal_batch_size=2048
    )
    assert result.converged.float().mean() >= 0.75, "too few converged samples for a real check"
    ok = result.converged
    error = step_change_rel_l2(result.attributions, reference)
    assert (error[ok] <= tolerance).all(), error[ok]
    with torch.no_grad():
        gap = f(x, target) - f(baseline, target)
    assert (_rel_error(result.attributions, gap)[ok] <= tolerance).all()
    assert (result.steps > 33).any(), "no sample needed refinement: the test would not see it"


def test_adaptive_in_groups_that_fit_node_memory_equals_one_group(trained_relu_cnn) -> None:
    model, x, target = trained_relu_cnn
    f, baseline = _target_column(model), torch.zeros_like(x)
    tight = {"step_change_tolerance": 0.005, "completeness_tolerance": 0.005}  # so that samples refine
    whole = adaptive_integrated_gradients(f, x, baseline, target, **tight)
    assert len(whole.steps.unique()) > 1
    per_sample_nodes = 513 * x[0].numel() * x.element_size()
    grouped = adaptive_integrated_gradients(f, x, baseline, target, node_memory=5 * per_sample_nodes, **tight)
    # 12 samples in groups of 5, 5 and 2: the same steps, checks and attributions, sample by sample.
    assert torch.equal(grouped.steps, whole.steps) and torch.equal(grouped.converged, whole.converged)
    assert torch.equal(grouped.output_gap, whole.output_gap)
    torch.testing.assert_close(grouped.attributions, whole.attributions, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grouped.step_change_rel_l2, whole.step_change_rel_l2, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("n_steps", ["auto", 16])
def test_audit_reports_steps_and_convergence_per_sample(trained_relu_cnn, n_steps) -> None:
    model, x, _ = trained_relu_cnn
    ig = {"n_steps": n_steps} if n_steps == "auto" else {"n_steps": n_steps, "check_step_change": True}
    report = audit(model, x.numpy(), {"methods": {"integrated_gradients": ig}, "batch_size": 5})
    metrics = report.metrics()
    prefix = "xai/integrated_gradients/"
    for key in ("steps_mean", "steps_max", "step_change_rel_l2_p95", "step_change_spearman_mean"):
        assert prefix + key in metrics
    rows = report.per_sample_rows()
    assert len(rows) == len(x)
    if n_steps == "auto":
        assert 0.0 <= metrics[prefix + "converged_fraction"] <= 1.0
        assert all(isinstance(r["integrated_gradients/converged"], bool) for r in rows)
        assert metrics[prefix + "steps_max"] > 9
        assert metrics[prefix + "completeness_rel_error_max"] <= 0.01 + 1e-6
    else:
        assert metrics[prefix + "steps_mean"] == 48.0  # 16 + 32 evaluations


def test_convergence_figures_are_png_files(trained_relu_cnn, tmp_path) -> None:
    model, x, target = trained_relu_cnn
    profiles = ig_path_profiles(
        _target_column(model), x[:3], torch.zeros_like(x[:3]), target[:3], ids=["a", "b", "c"], max_steps=65
    )
    paths = ig_convergence_figures(profiles, tmp_path / "plots")
    assert [p.name for p in paths] == list(FIGURES)
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 5000
