"""Every number an audit reports is right on any batch split, dtype and model.

Each test here guards one defect found on models the rest of the suite did not contain, and checks
an answer known on paper or computed independently in the test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from mlflow_xai.attribution.baselines import make_baseline
from mlflow_xai.config import BaselineConfig, load_config
from mlflow_xai.engine import BatchAttributor, audit
from mlflow_xai.errors import ConfigError, ProbeError
from mlflow_xai.probe import ProbeSet


class SmallCNN(nn.Module):
    """Max-pooling ReLU CNN with varied outputs: batch-size effects would show in every method."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.relu(self.conv(x))).flatten(1))


def small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN().eval()


def images(n: int = 7, seed: int = 1) -> np.ndarray:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)).numpy()


PATCHES = {"feature_mask": {"kind": "grid", "patch_size": 4}}
RANDOM_METHODS = {
    "gradient_shap": {"n_samples": 4, "stdevs": 0.1, "baseline": {"kind": "uniform"}, "n_baselines": 3},
    "noise_tunnel": {"method": "saliency", "nt_samples": 3, "stdevs": 0.2},
    "noise_tunnel_deeplift": {"method": "deeplift", "nt_samples": 2, "params": {"baseline": "uniform"}},
    "kernel_shap": {**PATCHES, "n_samples": 8},
    "lime": {**PATCHES, "n_samples": 8},
    "shapley_value_sampling": {**PATCHES, "n_samples": 2},
    "deeplift_shap": {"baseline": {"kind": "uniform", "seed": 3}, "n_baselines": 3},
}


def _masks(method: str, params: dict, batch_size: int, x: np.ndarray) -> np.ndarray:
    name = "noise_tunnel" if method.startswith("noise_tunnel") else method
    config = {
        "batch_size": batch_size,
        "methods": {name: params},
        "artifacts": {"mask_dtype": "float32", "sheet_samples": 0},
    }
    report = audit(small_cnn(), x, config)
    return np.asarray(report.methods[name].attributions)


@pytest.mark.parametrize("method", sorted(RANDOM_METHODS))
def test_random_methods_give_identical_masks_at_any_batch_size(method):
    x = images()
    params = RANDOM_METHODS[method]
    first = _masks(method, params, 1, x)
    assert np.isfinite(first).all() and np.abs(first).max() > 0
    for batch_size in (3, 32):
        assert np.array_equal(_masks(method, params, batch_size, x), first), batch_size
    # The draws are per sample, not one draw repeated: two identical images get different noise.
    twins = np.repeat(x[:1], 2, axis=0)
    both = _masks(method, params, 2, twins)
    assert not np.array_equal(both[0], both[1])


BASELINE_KINDS = ["zeros", "constant", "blur", "uniform", "probe_mean", "file"]


def _baseline_spec(kind: str, tmp_path) -> dict:
    spec: dict = {"kind": kind}
    if kind == "file":
        path = tmp_path / "baseline.npy"
        np.save(path, np.full((3, 8, 8), 0.25, np.float32))
        spec["path"] = str(path)
    return spec


@pytest.mark.parametrize("kind", [k for k in BASELINE_KINDS if k != "blur"])
def test_every_baseline_kind_gives_identical_random_draws_at_any_batch_size(kind, tmp_path):
    # GradientShap runs each sample alone, so its masks are bit-identical if and only if every
    # draw (the baseline distribution, the points, the noise) depends on the position alone.
    params = {**RANDOM_METHODS["gradient_shap"], "baseline": _baseline_spec(kind, tmp_path)}
    x = images()
    first = _masks("gradient_shap", params, 1, x)
    for batch_size in (3, 32):
        assert np.array_equal(_masks("gradient_shap", params, batch_size, x), first), batch_size


@pytest.mark.parametrize("kind", BASELINE_KINDS)
@pytest.mark.parametrize("method", ["integrated_gradients", "feature_ablation"])
def test_deterministic_methods_agree_at_any_batch_size_for_every_baseline_kind(kind, method, tmp_path):
    # Batched passes of 1, 3 or 7 images round differently in the last float32 bit (the
    # convolution's blocking), so these compare at float32 rounding; a baseline drawn per batch
    # row, as before, moved attributions by up to 0.4.
    params = {"baseline": _baseline_spec(kind, tmp_path)}
    if method == "feature_ablation":
        params = {**params, **PATCHES}
    x = images()
    first = _masks(method, params, 1, x)
    for batch_size in (3, 32):
        np.testing.assert_allclose(_masks(method, params, batch_size, x), first, rtol=1e-5, atol=1e-6)


def test_a_uniform_baseline_is_a_function_of_seed_and_position_only():
    config = BaselineConfig(kind="uniform", low=-1.0, high=2.0, seed=7)
    x = torch.zeros(8, 3, 4, 4)
    whole = make_baseline(config, x)
    part = make_baseline(config, x[:3], positions=torch.tensor([5, 6, 7]))
    assert torch.equal(part, whole[5:])
    assert not torch.equal(whole[0], whole[1])  # every sample its own draw
    assert whole.min() >= -1.0 and whole.max() < 2.0
    other_seed = make_baseline(BaselineConfig(kind="uniform", low=-1.0, high=2.0, seed=8), x)
    assert not torch.equal(other_seed, whole)


def test_an_out_of_memory_split_changes_no_random_draw():
    x = images(6)
    cfg = load_config({"methods": {"gradient_shap": RANDOM_METHODS["gradient_shap"]}})
    whole = BatchAttributor(small_cnn(), cfg)
    split = BatchAttributor(small_cnn(), cfg)
    split.splitters["gradient_shap"].limit = 2  # what a CUDA out-of-memory error leaves behind
    with whole.session(), split.session():
        a = whole.run(10, x, None, np.arange(6).astype(str))
        b = split.run(10, x, None, np.arange(6).astype(str))
    assert np.array_equal(a.methods["gradient_shap"].values, b.methods["gradient_shap"].values)


class Affine(nn.Module):
    """F(x) = x @ W.T + b: IG against any baseline is (x - x') * W[t], exactly."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_large_logits_do_not_fail_an_exact_attribution():
    # Logits near 1000 in float32, whose ulp is 2^-14: gaps of 20.45 and 30.4 ulps round to 20 and
    # 30 ulps, 2.2% and 1.3% off, though IG = x * w is exact.
    ulp = 2.0**-14
    weight = torch.tensor([[20.45 * ulp, 30.4 * ulp, 0.0], [0.0, 0.0, 1.0]])
    model = Affine(weight, torch.tensor([1000.0, 0.0])).eval()
    x = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]], np.float32)
    report = audit(model, x, {"target": 0, "methods": {"integrated_gradients": {"n_steps": 4}}})
    ig = report.methods["integrated_gradients"]
    expected = x.astype(np.float64) * weight[0].double().numpy()
    np.testing.assert_allclose(np.asarray(ig.attributions, np.float64), expected, rtol=2e-3)
    gap = ig.completeness.output_gap
    assert (np.abs(gap - expected.sum(1)) > 0.01 * np.abs(expected.sum(1))).any(), "the gap must be off"
    assert not ig.completeness.degenerate.any()
    assert ig.verdict == "pass", ig.completeness.rel_error


def test_a_gap_inside_the_outputs_rounding_is_degenerate_not_failed():
    # A float32 model with logits ~1e4: a gap of ~1e-4 is below 4 ulps of the outputs (~4e-3).
    weight = torch.tensor([[1e-4, 0.0], [0.0, 1.0]])
    model = Affine(weight, torch.tensor([1.0e4, 0.0])).eval()
    x = np.array([[1.0, 1.0]], np.float32)
    report = audit(model, x, {"target": 0, "methods": {"integrated_gradients": {"n_steps": 4}}})
    ig = report.methods["integrated_gradients"]
    assert ig.completeness.degenerate.tolist() == [True]
    assert np.isnan(ig.completeness.rel_error).all()


class SinOfSum(nn.Module):
    """F(x) = sin(k * sum(x)): a path that rises and falls back, for a near-zero output gap."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sin(self.k * x.flatten(1).sum(1) + self.anchor)
        return torch.stack([s, -s], dim=1)


def test_adaptive_ig_and_the_check_share_one_degenerate_floor():
    # sum(x) = pi / k + 1e-5 / k: F(x) - F(0) = sin(pi + 1e-5) ~ -1e-5, under the floor of 1e-3.
    model = SinOfSum(k=3.0).double().eval()
    x = np.full((1, 4), (np.pi + 1e-5) / 3.0 / 4, np.float64)
    config = {
        "target": 0,
        "checks": {"completeness": {"degenerate_floor": 1e-3}},
        "methods": {"integrated_gradients": {"n_steps": "auto", "max_steps": 257}},
    }
    report = audit(model, x, config)
    ig = report.methods["integrated_gradients"]
    assert ig.completeness.degenerate.tolist() == [True]
    # Judged on its step change alone: a smooth path converges early instead of burning max_steps.
    assert ig.extras["converged"].tolist() == [True]
    assert ig.extras["steps"][0] < 257


class SumChannels(nn.Module):
    """Starts with x.sum(1): autograd returns the input gradient as an expanded tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.sum(1).flatten(1))


@pytest.mark.parametrize("n_steps", ["auto", 8])
def test_models_with_expanded_input_gradients_are_audited(n_steps):
    torch.manual_seed(0)
    model = SumChannels().eval()
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(2)).numpy()
    report = audit(model, x, {"target": 1, "methods": {"integrated_gradients": {"n_steps": n_steps}}})
    w = model.head.weight[1].detach().double().view(1, 1, 4, 4).numpy()
    expected = x.astype(np.float64) * w  # every channel of a pixel gets the pixel's weight
    got = np.asarray(report.methods["integrated_gradients"].attributions, np.float64)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-4)


def test_fixed_step_ig_accumulates_above_bfloat16():
    torch.manual_seed(0)
    weight = torch.randn(2, 64)
    model = Affine(weight, torch.zeros(2)).to(torch.bfloat16).eval()
    x = torch.rand(2, 64, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    config = {
        "target": 0,
        "artifacts": {"mask_dtype": "float32"},
        "methods": {"integrated_gradients": {"n_steps": 512, "rule": "midpoint"}},
    }
    report = audit(model, x.float().numpy(), config)
    # (x - 0) * w in float64 from the bfloat16 values the model holds: exact on paper.
    expected = x.double().numpy() * model.linear.weight[0].detach().double().numpy()
    got = np.asarray(report.methods["integrated_gradients"].attributions, np.float64)
    rel = np.abs(got.sum(1) - expected.sum(1)) / np.abs(expected.sum(1))
    assert rel.max() < 1e-5, rel  # summed in bfloat16, 512 steps drift by ~1%
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_an_occlusion_stride_larger_than_its_window_is_a_config_error():
    with pytest.raises(ConfigError, match=r"strides \[1, 3, 3\] exceed sliding_window_shapes"):
        load_config({"methods": {"occlusion": {"sliding_window_shapes": [1, 2, 2], "strides": [1, 3, 3]}}})
    load_config({"methods": {"occlusion": {"sliding_window_shapes": [1, 2, 2], "strides": [1, 2, 2]}}})


@pytest.mark.parametrize("target", ["predicted", 0, "label"])
def test_labels_outside_the_models_classes_are_refused_whatever_the_target(target):
    probe = ProbeSet(images(3), labels=np.array([1, 2, 3]))  # 1-based labels of a 3-class model
    with pytest.raises(ProbeError, match="label 3 of probe sample '000002' is out of range"):
        audit(small_cnn(), probe, {"target": target, "methods": {"saliency": {}}})


DECLARED_VARIANTS = {
    "ig_fixed": ("integrated_gradients", {"n_steps": 4}),
    "ig_step_change": ("integrated_gradients", {"n_steps": 4, "check_step_change": True}),
    "ig_auto": ("integrated_gradients", {"n_steps": "auto", "max_steps": 65}),
    "occlusion": ("occlusion", {"sliding_window_shapes": [3, 4, 4], "strides": [3, 4, 4]}),
    "saliency": ("saliency", {}),
    "gradient_shap": ("gradient_shap", {"n_samples": 2}),
    "gradient_shap_local": ("gradient_shap", {"n_samples": 2, "multiply_by_inputs": False}),
    "deeplift": ("deeplift", {}),
    "layer_gradcam": ("layer_gradcam", {"layer": "conv"}),
    "lime": ("lime", {**PATCHES, "n_samples": 4}),
}


@pytest.mark.parametrize("variant", sorted(DECLARED_VARIANTS))
def test_each_method_declares_exactly_the_metrics_it_produces(variant):
    from mlflow_xai.report import metric_catalogue

    name, params = DECLARED_VARIANTS[variant]
    x = images(4)
    masks = np.zeros((4, 8, 8), bool)
    masks[:, 2:6, 2:6] = True
    probe = ProbeSet(x, labels=np.array([0, 1, 2, 0]), masks=masks)
    config = load_config({"methods": {name: params}, "artifacts": {"sheet_samples": 0}})
    produced = set(audit(small_cnn(), probe, config).metrics())
    catalogue = metric_catalogue(config)
    assert produced <= set(catalogue), produced - set(catalogue)
    # With labels, masks and judged samples, every declared metric but drift is produced.
    expected = {k for k, need in catalogue.items() if need != "baseline_model"}
    assert produced == expected, expected ^ produced


@pytest.mark.parametrize(
    ("thresholds", "methods", "kwargs", "message"),
    [
        (
            {"xai/integrated_gradients/completness_rel_error_p95": {"fail": 0.1}},
            {"integrated_gradients": {}},
            {},
            "did you mean 'xai/integrated_gradients/completeness_rel_error_p95'?",
        ),
        (
            {"xai/integrated_gradients/converged_fraction": {"fail": 1.0, "higher_is_better": True}},
            {"integrated_gradients": {"n_steps": 8}},
            {},
            "which 'integrated_gradients' as configured does not produce",
        ),
        (
            {"xai/saliency/object_mass_fraction_mean": {"fail": 0.1}},
            {"saliency": {}},
            {"has_masks": False},
            "needs ground-truth masks in the probe set",
        ),
        (
            {"xai/probe/accuracy": {"fail": 0.5}},
            {"saliency": {}},
            {"has_labels": False},
            "needs probe labels",
        ),
        (
            {"xai/saliency/drift_topk_overlap_min": {"fail": 0.5}},
            {"saliency": {}},
            {},
            "needs a baseline model to compare with",
        ),
        ({}, {"saliency": {}, "occlusion": {}}, {}, "the gate evaluates no check"),
        ({}, {"integrated_gradients": {}}, {"method_checks": False}, "the gate evaluates no check"),
    ],
)
def test_gate_config_errors_are_found_before_any_compute(thresholds, methods, kwargs, message):
    from mlflow_xai.ci import check_gate_config

    gate = {"thresholds": thresholds}
    if "method_checks" in kwargs:
        gate["method_checks"] = kwargs.pop("method_checks")
    config = load_config({"methods": methods, "gate": gate})
    with pytest.raises(ConfigError) as err:
        check_gate_config(config, has_baseline=False, **kwargs)
    assert message in str(err.value)
