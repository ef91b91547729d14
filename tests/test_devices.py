"""Devices, precision and batching: autocast, CUDA out-of-memory retries, model state and hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from mlflow_xai.attribution.methods.integrated_gradients import IntegratedGradients
from mlflow_xai.engine import audit
from mlflow_xai.errors import ModelError

IG = {"methods": {"integrated_gradients": {"n_steps": 16}}, "artifacts": {"sheet_samples": 0}}


def _flat_attributions(report, name="integrated_gradients"):
    return np.asarray(report.methods[name].attributions, dtype=np.float64).reshape(len(report.probe), -1)


def test_bfloat16_autocast_runs_and_stays_close(small_cnn, shapes16):
    _, probe = shapes16
    x = probe.images[:6]
    full = audit(small_cnn, x, {**IG, "artifacts": {"sheet_samples": 0, "mask_dtype": "float32"}})
    low = audit(
        small_cnn,
        x,
        {
            **IG,
            "artifacts": {"sheet_samples": 0, "mask_dtype": "float32"},
            "precision": {"autocast": "bfloat16"},
        },
    )
    a, b = _flat_attributions(full), _flat_attributions(low)
    assert not np.array_equal(a, b)  # the gradient passes really ran in bfloat16
    # bfloat16 keeps ~3 significant digits: each map keeps its direction (pixel values move by a
    # few percent of the map's norm), and the sum still closes the completeness gap to ~1%.
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() > 0.97, cosine
    assert low.methods["integrated_gradients"].completeness.rel_error.max() < 0.03
    # The endpoints F(x), F(x') and the predictions are computed in full precision either way.
    np.testing.assert_array_equal(low.predictions, full.predictions)
    gap = [r.methods["integrated_gradients"].completeness.output_gap for r in (low, full)]
    np.testing.assert_array_equal(gap[0], gap[1])
    assert (low.autocast, full.autocast) == ("bfloat16", None)
    assert low.dtype == "float32" and low.seed == 0 and low.tf32 is False and low.device == "cpu"


def test_float16_autocast_is_refused_on_the_cpu(small_cnn, shapes16):
    _, probe = shapes16
    with pytest.raises(ModelError, match="autocast 'float16' needs a CUDA .* use autocast: bfloat16"):
        audit(small_cnn, probe.images[:2], {**IG, "device": "cpu", "precision": {"autocast": "float16"}})


def test_tf32_setting_is_applied_during_the_audit_and_restored(small_cnn, shapes16, monkeypatch):
    _, probe = shapes16
    seen = []
    original = IntegratedGradients._attribute

    def spy(self, handle, x, target, context):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return original(self, handle, x, target, context)

    monkeypatch.setattr(IntegratedGradients, "_attribute", spy)
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    report = audit(small_cnn, probe.images[:2], {**IG, "precision": {"tf32": True}})
    assert seen == [(True, True)] and report.tf32 is True
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_cuda_out_of_memory_halves_the_batch_and_retries(small_cnn, shapes16, monkeypatch):
    """A fake device that fits at most 3 samples per pass: the audit still explains every sample."""
    _, probe = shapes16
    x = probe.images[:10]
    reference = audit(small_cnn, x, {**IG, "batch_size": 10})
    sizes = []
    original = IntegratedGradients._attribute

    def three_fit(self, handle, xb, target, context):
        sizes.append(len(xb))
        if len(xb) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, handle, xb, target, context)

    monkeypatch.setattr(IntegratedGradients, "_attribute", three_fit)
    report = audit(small_cnn, x, {**IG, "batch_size": 10})
    # 10 fails, 5 fails, 3 fits; the size sticks: 3, 3, then the last 1.
    assert sizes == [10, 5, 3, 3, 3, 1]
    assert report.oom_splits == {"integrated_gradients": 2}
    np.testing.assert_allclose(_flat_attributions(report), _flat_attributions(reference), atol=1e-3)
    ours, theirs = report.methods["integrated_gradients"], reference.methods["integrated_gradients"]
    np.testing.assert_allclose(ours.completeness.rel_error, theirs.completeness.rel_error, atol=1e-6)
    np.testing.assert_array_equal(ours.extras["steps"], theirs.extras["steps"])


def test_out_of_memory_on_one_sample_says_what_to_do(small_cnn, shapes16, monkeypatch):
    _, probe = shapes16

    def never_fits(self, handle, xb, target, context):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(IntegratedGradients, "_attribute", never_fits)
    with pytest.raises(ModelError, match="ran out of device memory on a single sample; lower its"):
        audit(small_cnn, probe.images[:4], IG)


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )


HOOKED = {
    "methods": {
        "deeplift": {},
        "guided_backprop": {},
        "layer_gradcam": {"layer": "features.conv3"},
        "integrated_gradients": {"n_steps": 4},
    },
    "artifacts": {"sheet_samples": 0},
}


def test_no_hook_is_left_behind_and_state_is_restored(small_cnn, shapes16, monkeypatch):
    _, probe = shapes16
    assert _hooks(small_cnn) == 0
    small_cnn.train()
    flags = [p.requires_grad for p in small_cnn.parameters()]
    seen = {}
    original = IntegratedGradients._attribute

    def spy(self, handle, x, target, context):
        seen["training"] = handle.module.training
        seen["requires_grad"] = any(p.requires_grad for p in handle.module.parameters())
        return original(self, handle, x, target, context)

    monkeypatch.setattr(IntegratedGradients, "_attribute", spy)
    audit(small_cnn, probe.images[:3], HOOKED)
    assert seen == {"training": False, "requires_grad": False}
    assert _hooks(small_cnn) == 0
    assert small_cnn.training and [p.requires_grad for p in small_cnn.parameters()] == flags

    def fails(self, handle, x, target, context):
        raise RuntimeError("boom")

    monkeypatch.setattr(IntegratedGradients, "_attribute", fails)  # runs after the hooked methods
    with pytest.raises(RuntimeError, match="boom"):
        audit(small_cnn, probe.images[:3], HOOKED)
    assert _hooks(small_cnn) == 0
    assert small_cnn.training and [p.requires_grad for p in small_cnn.parameters()] == flags
    small_cnn.eval()
