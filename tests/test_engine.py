"""The engine without MLflow: probe validation, model state, targets, outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from mlflow_xai.engine import audit
from mlflow_xai.errors import ModelError, ProbeError
from mlflow_xai.probe import ProbeSet

FAST = {
    "methods": {"integrated_gradients": {"n_steps": 8}},
    "artifacts": {"sheet_samples": 0},
}


def test_model_state_is_restored(small_cnn, shapes16):
    _, probe = shapes16
    small_cnn.train()
    small_cnn.features.conv1.weight.requires_grad_(True)
    small_cnn.head.bias.requires_grad_(False)
    report = audit(small_cnn, probe.images[:4], FAST)
    assert small_cnn.training and small_cnn.features.conv1.training
    assert small_cnn.features.conv1.weight.requires_grad
    assert not small_cnn.head.bias.requires_grad
    small_cnn.eval()
    small_cnn.head.bias.requires_grad_(True)
    assert report.metrics()["xai/probe/samples"] == 4.0


def test_eval_mode_is_used_during_the_audit(shapes16):
    """Dropout in training mode would make F random; the audit must run in eval mode."""
    _, probe = shapes16
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 64), nn.Dropout(0.9), nn.Linear(64, 4))
    model.double().train()
    report = audit(
        model,
        probe.images[:5].astype(np.float64),
        {**FAST, "methods": {"integrated_gradients": {"n_steps": 4}}},
    )
    # Eval mode: a piecewise-linear model without ReLU is linear, so IG is exact.
    assert report.metrics()["xai/integrated_gradients/completeness_rel_error_max"] < 1e-10
    assert model.training


@pytest.mark.parametrize(
    ("inputs", "labels", "message"),
    [
        (np.zeros((0, 3, 16, 16), np.float32), None, "the probe set is empty"),
        (np.full((2, 3, 16, 16), np.nan, np.float32), None, "NaN or Inf in 2 sample(s)"),
        (np.zeros((2, 3, 16, 16), np.uint8), None, "must be floating point"),
        (np.zeros((2, 1, 16, 16), np.float32), None, "cannot take probe inputs of shape [1, 16, 16]"),
        (
            np.zeros((2, 3, 16, 16), np.float32),
            np.array([0, 7]),
            "label 7 of probe sample '000001' is out of range",
        ),
        (np.zeros((2, 3, 16, 16), np.float32), np.array([0, 1, 2]), "probe labels must be 2 integers"),
    ],
)
def test_bad_probe_gets_one_clear_error(small_cnn, inputs, labels, message):
    with pytest.raises(ProbeError) as err:
        audit(
            small_cnn,
            ProbeSet(inputs, labels) if len(inputs) else inputs,
            {**FAST, "target": "label"} if labels is not None else FAST,
        )
    assert message in str(err.value)


def test_target_label_without_labels(small_cnn):
    with pytest.raises(ProbeError, match="target 'label' needs probe labels"):
        audit(small_cnn, np.zeros((2, 3, 16, 16), np.float32), {**FAST, "target": "label"})


def test_non_differentiable_output_is_refused(shapes16):
    class ArgmaxModel(nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(x.flatten(1)[:, :4].argmax(1), 4)

    _, probe = shapes16
    with pytest.raises(ModelError, match="cannot be differentiated"):
        audit(ArgmaxModel(), probe.images[:2], FAST)


def test_tuple_output_is_refused(shapes16):
    class TupleModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3 * 16 * 16, 4)

        def forward(self, x):
            out = self.lin(x.flatten(1))
            return out, out

    _, probe = shapes16
    with pytest.raises(ModelError, match="returned tuple"):
        audit(TupleModel(), probe.images[:2], FAST)


@pytest.mark.parametrize("output", ["logit", "probability", "log_probability"])
def test_explained_output_and_fixed_target(output):
    """IG of a linear model, explained through softmax or not, still sums to F(x) - F(x')."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    x = np.random.default_rng(0).normal(size=(6, 12)).astype(np.float64)
    cfg = {"output": output, "target": 2, "methods": {"integrated_gradients": {"n_steps": 64}}}
    report = audit(model, x, cfg)
    assert (report.targets == 2).all()
    tolerance = 1e-10 if output == "logit" else 1e-3
    assert report.metrics()["xai/integrated_gradients/completeness_rel_error_max"] < tolerance


def test_probe_hash_covers_every_value():
    x = np.random.default_rng(0).normal(size=(3000, 4)).astype(np.float32)
    a = ProbeSet(x).sha256()
    y = x.copy()
    y[-1, -1] += 1.0
    assert ProbeSet(y).sha256() != a
    assert ProbeSet(x.copy()).sha256() == a


def test_attributions_stream_to_disk_and_failures_leave_nothing(small_cnn, tmp_path, monkeypatch):
    import gc
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    x = np.zeros((3, 3, 16, 16), np.float32)
    with pytest.raises(ProbeError, match="label 9 of probe sample '000002' is out of range"):
        audit(small_cnn, ProbeSet(x, np.array([0, 1, 9])), {**FAST, "target": "label"})
    assert list(tmp_path.glob("mlflow-xai-attr-*")) == []
    report = audit(small_cnn, x, FAST)
    attributions = report.methods["integrated_gradients"].attributions
    assert isinstance(attributions, np.memmap) and attributions.shape == (3, 3, 16, 16)
    assert len(list(tmp_path.glob("mlflow-xai-attr-*"))) == 1
    del report, attributions
    gc.collect()
    assert list(tmp_path.glob("mlflow-xai-attr-*")) == []


@pytest.mark.parametrize("internal_batch_size", [5, 12, 64])
def test_whole_node_passes_equal_the_per_point_path(internal_batch_size):
    """IG's fast path (whole nodes per pass) and the per-point path sum the same gradients."""
    from mlflow_xai.attribution.methods.integrated_gradients import integrated_gradients, path_gradient_sum
    from mlflow_xai.attribution.quadrature import nodes_and_weights

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3)).double()

    def f(points, target):
        return model(points).gather(1, target.view(-1, 1)).squeeze(1)

    x = torch.randn(4, 3, 4, dtype=torch.float64)
    baseline = torch.zeros_like(x)
    target = torch.tensor([0, 2, 1, 2])
    nodes, weights = nodes_and_weights("gauss_legendre", 7)  # 7 nodes: the last pass is partial
    nodes_t, weights_t = torch.as_tensor(nodes), torch.as_tensor(weights)
    expected = x * path_gradient_sum(f, x, baseline, target, nodes_t, weights_t, 1)
    got = integrated_gradients(
        f, x, baseline, target, n_steps=7, rule="gauss_legendre", internal_batch_size=internal_batch_size
    )
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_progress_bar_on_stderr_only_when_asked_or_on_a_terminal(small_cnn, capsys):
    from mlflow_xai.config import load_config
    from mlflow_xai.engine import audit_prepared, prepare_probe

    cfg = load_config({**FAST, "batch_size": 2})
    probe = prepare_probe(np.zeros((4, 3, 16, 16), np.float32), cfg)
    audit_prepared(small_cnn, probe, cfg, progress=True)
    shown = capsys.readouterr()
    # Samples x methods: 4 samples, one method.
    assert "attributing" in shown.err and "4/4" in shown.err and shown.out == ""
    audit_prepared(small_cnn, probe, cfg, progress=None)  # stderr is not a terminal here: lines
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("mlflow-xai: all 1 method(s) done: 4/4 sample-methods (100%)")
    audit_prepared(small_cnn, probe, cfg, progress=False)
    assert capsys.readouterr().err == ""
