"""Known answers: every adapter against Captum called directly, and IG against math done on paper.

Nothing here compares the package with its own earlier output. A Captum-backed method must equal the
Captum class called by hand with the same inputs, targets, baselines and random seeds (the seeding
contract of ``mlflow_xai.seeding``: each random sample runs alone, torch's and NumPy's global
generators seeded by ``sample_seed(seed, position, stream)``); IG and saliency must equal closed
forms on linear and quadratic models; the audit's explained output (label targets, probabilities,
probe-mean baselines) must equal the same quantity computed here in float64.
"""

from __future__ import annotations

from contextlib import contextmanager

import mlflow
import numpy as np
import pytest
import torch
import torch.nn as nn
from captum._utils.models.linear_model import SkLearnLasso, SkLearnRidge
from captum.attr import (
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    FeatureAblation,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    KernelShap,
    LayerAttribution,
    LayerGradCam,
    Lime,
    NoiseTunnel,
    Occlusion,
    Saliency,
    ShapleyValueSampling,
)
from captum.attr._core.lime import get_exp_kernel_similarity_function
from mlflow import MlflowClient
from scipy.stats import spearmanr

from mlflow_xai import tracking
from mlflow_xai.attribution.baselines import uniform_noise
from mlflow_xai.attribution.methods import build
from mlflow_xai.attribution.methods.base import AttributionContext
from mlflow_xai.config import load_config
from mlflow_xai.engine import audit
from mlflow_xai.model import ModelHandle, audit_mode
from mlflow_xai.seeding import sample_seed

# Captum's notices on the direct calls below (the adapters silence the same ones).
pytestmark = [
    pytest.mark.filterwarnings("ignore:Input Tensor .* did not already require gradients:UserWarning"),
    pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning"),
    pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning"),
]

CPU = torch.device("cpu")
POSITIONS = [5, 6, 7]  # not 0..B-1: the draws must follow the context's positions
EXACT = {"rtol": 1e-10, "atol": 1e-12}  # float64 model, same operations: equal up to summation order
STORED = {"mask_dtype": "float32", "sheet_samples": 0}  # audit attributions as float32, no figures


# --------------------------------------------------------------------------------------------------
# Models and inputs


class ReluCNN(nn.Module):
    """3x8x8 -> 3 with distinct nn.ReLU modules (guided methods hook them) and average pooling
    (Captum's DeepLift rule is exact there)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu1(self.conv1(x)))
        return self.head(self.gap(self.relu2(self.conv2(x))).flatten(1))


def relu_cnn() -> ReluCNN:
    torch.manual_seed(0)
    model = ReluCNN()
    with torch.no_grad():  # default init gives near-constant outputs; make them vary with the input
        for layer in (model.conv1, model.conv2, model.head):
            layer.weight.mul_(3.0)
    return model.double().eval()


def images() -> torch.Tensor:
    return torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def smooth_mlp(features: int = 5, classes: int = 3) -> nn.Module:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(features, 8), nn.Tanh(), nn.Linear(8, classes))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.mul_(2.0)
    return model.double().eval()


# Weights of both signs, and no two classes alike.
W = torch.tensor(
    [[1.5, -2.0, 0.25, 3.0], [-0.5, 1.0, -4.0, 0.75], [2.5, 0.5, 1.25, -1.5]], dtype=torch.float64
)
B = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)


def linear_model() -> nn.Linear:
    model = nn.Linear(4, 3).double()
    with torch.no_grad():
        model.weight.copy_(W)
        model.bias.copy_(B)
    return model.eval()


class SumOfSquares(nn.Module):
    """F(x) = sum(x**2), as one class, or as two classes (F, -F) when ``classes`` is 2."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.unused = nn.Linear(1, 1).double()  # a parameter, so that inputs follow float64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = (x**2).sum(dim=1, keepdim=True)
        return f if self.classes == 1 else torch.cat([f, -f], dim=1)


# --------------------------------------------------------------------------------------------------
# Running an adapter, and the seeding contract written out here


def method_config(name: str, params: dict):
    return load_config({"methods": {name: params}}).methods.enabled()[name]


def adapter(name, params, model, x, target, *, positions=POSITIONS, output="logit", probe_mean=None):
    method = build(name, method_config(name, params))
    handle = ModelHandle(model, CPU, output)
    context = AttributionContext(
        positions=torch.tensor(positions), probe_mean=probe_mean, degenerate_floor=1e-6
    )
    with audit_mode(model):
        return method.attribute(handle, x, target, context)


@contextmanager
def contract_seed(seed: int, position: int, stream: str):
    """torch's and NumPy's global generators seeded as the contract says, restored after."""
    value = sample_seed(seed, position, stream)
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(value)
        np.random.seed(value % 2**32)
        try:
            yield
        finally:
            np.random.set_state(state)


def per_sample(stream: str, seed: int, x: torch.Tensor, target: torch.Tensor, one) -> torch.Tensor:
    """``one(i, position)`` for each sample alone, under the contract's seed for its position."""
    pieces = []
    for i, position in enumerate(POSITIONS):
        with contract_seed(seed, position, stream):
            pieces.append(one(i, position))
    return torch.cat(pieces)


UNIFORM = {"kind": "uniform", "low": -0.5, "high": 0.5, "seed": 3}


def uniform_batch(x: torch.Tensor) -> torch.Tensor:
    """The ``UNIFORM`` baseline of each sample, drawn from (seed, its position)."""
    shape = tuple(x.shape[1:])
    return torch.stack([uniform_noise(shape, -0.5, 0.5, 3, p) for p in POSITIONS]).to(x)


def uniform_set(x: torch.Tensor, n: int, position: int) -> torch.Tensor:
    """The ``UNIFORM`` baseline distribution (n draws) of the sample at ``position``."""
    return uniform_noise((n, *x.shape[1:]), -0.5, 0.5, 3, position).to(x)


def grid(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Square patches over 8x8 images, numbered row by row: (B, 1, 8, 8) group ids."""
    rows = torch.arange(8) // patch
    ids = rows.view(-1, 1) * (8 // patch) + rows.view(1, -1)
    return ids.expand(len(x), 1, 8, 8)


# --------------------------------------------------------------------------------------------------
# 1. Every Captum-backed adapter equals its Captum class called directly


def _saliency(abs_):
    return lambda m, x, t: Saliency(m).attribute(x, target=t, abs=abs_)


def _deeplift(m, x, t):
    return DeepLift(m, multiply_by_inputs=True, eps=1e-10).attribute(x, baselines=uniform_batch(x), target=t)


def _deeplift_multipliers(m, x, t):
    baselines = torch.full_like(x, 0.3)
    return DeepLift(m, multiply_by_inputs=False, eps=1e-10).attribute(x, baselines=baselines, target=t)


def _deeplift_probability(m, x, t):
    explained = nn.Sequential(m, nn.Softmax(dim=1))
    return DeepLift(explained, eps=1e-10).attribute(x, baselines=uniform_batch(x), target=t)


def _deeplift_shap_uniform(m, x, t):
    def one(i, p):
        return DeepLiftShap(m).attribute(x[i : i + 1], baselines=uniform_set(x, 3, p), target=t[i : i + 1])

    return per_sample("deeplift_shap", 0, x, t, one)


def _deeplift_shap_constant(m, x, t):
    baselines = torch.full((2, *x.shape[1:]), 0.4, dtype=x.dtype)  # Captum needs two baselines
    return DeepLiftShap(m).attribute(x, baselines=baselines, target=t)


def _gradient_shap_uniform(m, x, t):
    def one(i, p):
        explainer = GradientShap(m, multiply_by_inputs=True)
        baselines = uniform_set(x, 4, p)
        return explainer.attribute(
            x[i : i + 1], baselines=baselines, n_samples=6, stdevs=0.1, target=t[i : i + 1]
        )

    return per_sample("gradient_shap", 11, x, t, one)


def _gradient_shap_zeros_local(m, x, t):
    def one(i, p):
        explainer = GradientShap(m, multiply_by_inputs=False)
        baselines = torch.zeros(1, *x.shape[1:], dtype=x.dtype)
        return explainer.attribute(
            x[i : i + 1], baselines=baselines, n_samples=3, stdevs=0.2, target=t[i : i + 1]
        )

    return per_sample("gradient_shap", 5, x, t, one)


def _guided_gradcam(mode, to_input):
    def reference(m, x, t):
        explainer = GuidedGradCam(m, m.conv2)
        return explainer.attribute(x, target=t, interpolate_mode=mode, attribute_to_layer_input=to_input)

    return reference


def _layer_gradcam(layer, mode, relu, to_input):
    def reference(m, x, t):
        cam = LayerGradCam(m, getattr(m, layer)).attribute(
            x, target=t, relu_attributions=relu, attribute_to_layer_input=to_input
        )
        if cam.shape[2:] != x.shape[2:]:
            cam = LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode=mode)
        return cam.expand_as(x)

    return reference


def _feature_ablation_constant(m, x, t):
    return FeatureAblation(m).attribute(
        x, baselines=0.2, target=t, feature_mask=grid(x, 4), perturbations_per_eval=2
    )


def _feature_ablation_uniform(m, x, t):
    return FeatureAblation(m).attribute(
        x, baselines=uniform_batch(x), target=t, feature_mask=grid(x, 4), perturbations_per_eval=64
    )


def _shapley(m, x, t):
    baselines, mask = uniform_batch(x), grid(x, 2)

    def one(i, p):
        rows = slice(i, i + 1)
        return ShapleyValueSampling(m).attribute(
            x[rows], baselines=baselines[rows], target=t[rows], feature_mask=mask[rows],
            n_samples=3, perturbations_per_eval=8,
        )  # fmt: skip

    return per_sample("shapley_value_sampling", 2, x, t, one)


def _kernel_shap(m, x, t):
    mask = grid(x, 2)

    def one(i, p):
        rows = slice(i, i + 1)
        return KernelShap(m).attribute(
            x[rows], baselines=torch.zeros_like(x[rows]), target=t[rows], feature_mask=mask[rows],
            n_samples=20, perturbations_per_eval=64,
        )  # fmt: skip

    return per_sample("kernel_shap", 4, x, t, one)


def _lime(surrogate, distance, width, seed):
    def reference(m, x, t):
        mask = grid(x, 2)

        def one(i, p):
            rows = slice(i, i + 1)
            explainer = Lime(
                m,
                interpretable_model=surrogate(),
                similarity_func=get_exp_kernel_similarity_function(distance, width),
            )
            return explainer.attribute(
                x[rows], baselines=torch.full_like(x[rows], 0.1), target=t[rows],
                feature_mask=mask[rows], n_samples=24, perturbations_per_eval=64,
            )  # fmt: skip

        return per_sample("lime", seed, x, t, one)

    return reference


def _noise_tunnel(nt_type, abs_, batch):
    def reference(m, x, t):
        def one(i, p):
            return NoiseTunnel(Saliency(m)).attribute(
                x[i : i + 1], nt_type=nt_type, nt_samples=4, nt_samples_batch_size=batch, stdevs=0.2,
                draw_baseline_from_distrib=False, target=t[i : i + 1], abs=abs_,
            )  # fmt: skip

        return per_sample("noise_tunnel", 9, x, t, one)

    return reference


def _occlusion(window, strides, baseline):
    def reference(m, x, t):
        return Occlusion(m).attribute(
            x, sliding_window_shapes=tuple(window), strides=tuple(strides), baselines=baseline, target=t
        )

    return reference


_LASSO = lambda: SkLearnLasso(alpha=0.01)  # noqa: E731
_RIDGE = lambda: SkLearnRidge(alpha=0.5)  # noqa: E731
_FA = {"feature_mask": {"kind": "grid", "patch_size": 4}}
_FINE = {"kind": "grid", "patch_size": 2}
_LIME = {"feature_mask": _FINE, "baseline": {"kind": "constant", "value": 0.1}, "n_samples": 24}

# (id, method, its params, the explained output, the Captum reference)
CAPTUM_CASES = [
    ("saliency[abs]", "saliency", {}, "logit", _saliency(True)),
    ("saliency[signed]", "saliency", {"abs": False}, "logit", _saliency(False)),
    (
        "input_x_gradient",
        "input_x_gradient",
        {},
        "logit",
        lambda m, x, t: InputXGradient(m).attribute(x, target=t),
    ),
    ("deeplift[uniform]", "deeplift", {"baseline": UNIFORM}, "logit", _deeplift),
    (
        "deeplift[multipliers]",
        "deeplift",
        {"multiply_by_inputs": False, "baseline": {"kind": "constant", "value": 0.3}},
        "logit",
        _deeplift_multipliers,
    ),
    ("deeplift[probability]", "deeplift", {"baseline": UNIFORM}, "probability", _deeplift_probability),
    (
        "deeplift_shap[uniform]",
        "deeplift_shap",
        {"baseline": UNIFORM, "n_baselines": 3},
        "logit",
        _deeplift_shap_uniform,
    ),
    (
        "deeplift_shap[constant]",
        "deeplift_shap",
        {"baseline": {"kind": "constant", "value": 0.4}},
        "logit",
        _deeplift_shap_constant,
    ),
    (
        "gradient_shap[uniform]",
        "gradient_shap",
        {"baseline": UNIFORM, "n_baselines": 4, "n_samples": 6, "stdevs": 0.1, "seed": 11},
        "logit",
        _gradient_shap_uniform,
    ),
    (
        "gradient_shap[zeros,local]",
        "gradient_shap",
        {"multiply_by_inputs": False, "n_samples": 3, "stdevs": 0.2, "seed": 5},
        "logit",
        _gradient_shap_zeros_local,
    ),
    (
        "guided_backprop",
        "guided_backprop",
        {},
        "logit",
        lambda m, x, t: GuidedBackprop(m).attribute(x, target=t),
    ),
    ("deconvolution", "deconvolution", {}, "logit", lambda m, x, t: Deconvolution(m).attribute(x, target=t)),
    (
        "guided_gradcam[nearest]",
        "guided_gradcam",
        {"layer": "conv2"},
        "logit",
        _guided_gradcam("nearest", False),
    ),
    (
        "guided_gradcam[bilinear,layer_input]",
        "guided_gradcam",
        {"layer": "conv2", "interpolate_mode": "bilinear", "attribute_to_layer_input": True},
        "logit",
        _guided_gradcam("bilinear", True),
    ),
    (
        "layer_gradcam[bilinear]",
        "layer_gradcam",
        {"layer": "conv2"},
        "logit",
        _layer_gradcam("conv2", "bilinear", True, False),
    ),
    (
        "layer_gradcam[nearest,signed,layer_input]",
        "layer_gradcam",
        {
            "layer": "conv2",
            "interpolate_mode": "nearest",
            "relu_attributions": False,
            "attribute_to_layer_input": True,
        },
        "logit",
        _layer_gradcam("conv2", "nearest", False, True),
    ),
    (
        "layer_gradcam[full_size,signed]",
        "layer_gradcam",
        {"layer": "conv1", "relu_attributions": False},
        "logit",
        _layer_gradcam("conv1", "bilinear", False, False),
    ),
    (
        "feature_ablation[constant]",
        "feature_ablation",
        {**_FA, "baseline": {"kind": "constant", "value": 0.2}, "perturbations_per_eval": 2},
        "logit",
        _feature_ablation_constant,
    ),
    (
        "feature_ablation[uniform]",
        "feature_ablation",
        {**_FA, "baseline": UNIFORM},
        "logit",
        _feature_ablation_uniform,
    ),
    (
        "shapley_value_sampling",
        "shapley_value_sampling",
        {"feature_mask": _FINE, "baseline": UNIFORM, "n_samples": 3, "perturbations_per_eval": 8, "seed": 2},
        "logit",
        _shapley,
    ),
    (
        "kernel_shap",
        "kernel_shap",
        {"feature_mask": _FINE, "n_samples": 20, "seed": 4},
        "logit",
        _kernel_shap,
    ),
    ("lime[lasso,cosine]", "lime", {**_LIME, "seed": 6}, "logit", _lime(_LASSO, "cosine", 1.0, 6)),
    (
        "lime[ridge,euclidean]",
        "lime",
        {
            **_LIME,
            "interpretable_model": "ridge",
            "alpha": 0.5,
            "distance_mode": "euclidean",
            "kernel_width": 3.0,
            "seed": 8,
        },
        "logit",
        _lime(_RIDGE, "euclidean", 3.0, 8),
    ),
    (
        "noise_tunnel[smoothgrad_sq,signed]",
        "noise_tunnel",
        {
            "method": "saliency",
            "params": {"abs": False},
            "nt_type": "smoothgrad_sq",
            "nt_samples": 4,
            "stdevs": 0.2,
            "seed": 9,
        },
        "logit",
        _noise_tunnel("smoothgrad_sq", False, None),
    ),
    (
        "noise_tunnel[vargrad,batched]",
        "noise_tunnel",
        {
            "method": "saliency",
            "nt_type": "vargrad",
            "nt_samples": 4,
            "nt_samples_batch_size": 2,
            "stdevs": 0.2,
            "seed": 9,
        },
        "logit",
        _noise_tunnel("vargrad", True, 2),
    ),
    (
        "occlusion[even]",
        "occlusion",
        {
            "sliding_window_shapes": [3, 4, 4],
            "strides": [3, 2, 2],
            "baseline": 0.3,
            "perturbations_per_eval": 5,
        },
        "logit",
        _occlusion([3, 4, 4], [3, 2, 2], 0.3),
    ),
    (
        "occlusion[clipped]",
        "occlusion",
        {
            "sliding_window_shapes": [2, 3, 3],
            "strides": [1, 2, 2],
            "baseline": -0.25,
            "internal_batch_size": 7,
        },
        "logit",
        _occlusion([2, 3, 3], [1, 2, 2], -0.25),
    ),
]
TARGETS = torch.tensor([2, 0, 1])  # fixed, and not all alike: the target column must be honoured


@pytest.mark.parametrize(
    ("name", "params", "output", "reference"),
    [case[1:] for case in CAPTUM_CASES],
    ids=[case[0] for case in CAPTUM_CASES],
)
def test_adapter_equals_captum_called_directly(name, params, output, reference):
    model, x = relu_cnn(), images()
    got = adapter(name, params, model, x, TARGETS, output=output).values
    expected = reference(model, x, TARGETS).detach()
    assert expected.abs().sum() > 0  # a reference of zeros would prove nothing
    assert got.dtype == x.dtype
    # Captum's ShapleyValueSampling, KernelShap, Lime and Occlusion return float32 even for float64
    # inputs. The first three adapters cast Captum's result (so it matches exactly); occlusion is our
    # own float64 implementation, so it matches Captum's float32 to float32 rounding only.
    tolerance = {"rtol": 1e-6, "atol": 1e-8} if name == "occlusion" else EXACT
    torch.testing.assert_close(got, expected.to(x.dtype), **tolerance)


def test_random_methods_depend_on_the_position_not_on_the_batch():
    """The sample at position 6 gets the same draws alone as in the middle of a batch, and other
    draws at another position (so the equalities above do test the positions)."""
    model, x = relu_cnn(), images()
    params = {"baseline": UNIFORM, "n_baselines": 4, "n_samples": 6, "stdevs": 0.1, "seed": 11}
    batched = adapter("gradient_shap", params, model, x, TARGETS).values
    alone = adapter("gradient_shap", params, model, x[1:2], TARGETS[1:2], positions=[6]).values
    moved = adapter("gradient_shap", params, model, x[1:2], TARGETS[1:2], positions=[1]).values
    torch.testing.assert_close(alone, batched[1:2], **EXACT)
    assert not torch.allclose(moved, batched[1:2])


# --------------------------------------------------------------------------------------------------
# IG known answers


def _audit(model, inputs, config, **kwargs):
    return audit(model, inputs, {**config, "artifacts": STORED}, **kwargs)


def test_label_targets_explain_the_label_not_the_prediction():
    model = linear_model()
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2 - 1
    predicted = (x @ W.T + B).argmax(dim=1)
    labels = ((predicted + 1) % 3).numpy()  # every label differs from its prediction
    config = {"target": "label", "methods": {"integrated_gradients": {"n_steps": 2}}}
    report = _audit(model, x.numpy(), config, labels=labels)

    np.testing.assert_array_equal(report.targets, labels)
    np.testing.assert_array_equal(report.predictions, predicted.numpy())
    ig = report.methods["integrated_gradients"]
    expected = (x * W[labels]).numpy()  # IG of W x + b against zeros: x * W[label]
    np.testing.assert_allclose(ig.attributions, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ig.completeness.output_gap, (x * W[labels]).sum(1).numpy(), rtol=1e-12)


def _explained(z: torch.Tensor, t: torch.Tensor, output: str) -> torch.Tensor:
    """The explained output of logits ``z`` (float64), with the softmax written out."""
    zt = z.gather(1, t.view(-1, 1)).squeeze(1)
    shift = z.max(dim=1).values
    log_norm = shift + torch.log(torch.exp(z - shift.view(-1, 1)).sum(dim=1))
    if output == "probability":
        return torch.exp(zt - log_norm)
    if output == "log_probability":
        return zt - log_norm
    return zt


def _gauss_legendre_ig(model, x, baseline, t, n, output="logit"):
    """IG by n-point Gauss-Legendre on [0, 1], float64, one gradient evaluation per node."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    total = torch.zeros_like(x)
    for node, weight in zip((nodes + 1) / 2, weights / 2, strict=True):
        point = (baseline + float(node) * (x - baseline)).requires_grad_(True)
        (grad,) = torch.autograd.grad(_explained(model(point), t, output).sum(), point)
        total += float(weight) * grad
    return (x - baseline) * total


@pytest.mark.parametrize("output", ["logit", "probability", "log_probability"])
def test_explained_output_gap_and_attributions_follow_output(output):
    model = smooth_mlp()
    x = torch.rand(5, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2 - 1
    config = {
        "output": output,
        "methods": {"integrated_gradients": {"n_steps": 12, "baseline": {"kind": "constant", "value": 0.25}}},
    }
    report = _audit(model, x.numpy(), config)

    baseline = torch.full_like(x, 0.25)
    with torch.no_grad():
        z, z0 = model(x), model(baseline)
    t = z.argmax(dim=1)
    np.testing.assert_array_equal(report.targets, t.numpy())
    ig = report.methods["integrated_gradients"]
    gap = (_explained(z, t, output) - _explained(z0, t, output)).numpy()
    np.testing.assert_allclose(ig.completeness.output_gap, gap, rtol=1e-12, atol=1e-15)
    expected = _gauss_legendre_ig(model, x, baseline, t, 12, output).numpy()
    np.testing.assert_allclose(ig.attributions, expected, rtol=1e-5, atol=1e-7)


def test_step_change_compares_n_with_2n_steps():
    model, n = smooth_mlp(), 3
    x = torch.rand(4, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 4 - 2
    ig_config = {"n_steps": n, "check_step_change": True, "baseline": {"kind": "constant", "value": -0.5}}
    report = _audit(model, x.numpy(), {"methods": {"integrated_gradients": ig_config}})

    baseline = torch.full_like(x, -0.5)
    with torch.no_grad():
        t = model(x).argmax(dim=1)
    coarse = _gauss_legendre_ig(model, x, baseline, t, n).numpy()
    fine = _gauss_legendre_ig(model, x, baseline, t, 2 * n).numpy()
    change = np.linalg.norm(fine - coarse, axis=1) / np.linalg.norm(fine, axis=1)
    assert change.min() > 1e-5  # coarse enough for the check to see a change

    ig = report.methods["integrated_gradients"]
    np.testing.assert_allclose(ig.attributions, coarse, rtol=1e-5, atol=1e-7)  # the n-step result
    np.testing.assert_allclose(ig.extras["step_change_rel_l2"], change, rtol=1e-9)
    np.testing.assert_array_equal(ig.extras["steps"], np.full(len(x), 3 * n))
    rho = [spearmanr(c, f).statistic for c, f in zip(coarse, fine, strict=True)]
    np.testing.assert_allclose(ig.extras["step_change_spearman"], rho, rtol=1e-9)


# IG of sum(x**2) along x' + a (x - x') with nodes a_k: (x - x') * 2 (x' + c (x - x')), c = mean(a_k).
RULE_CASES = [
    ("left", 1, 0.0),
    ("left", 2, 0.25),
    ("left", 4, 0.375),
    ("right", 1, 1.0),
    ("right", 2, 0.75),
    ("midpoint", 1, 0.5),
    ("midpoint", 3, 0.5),
    ("trapezoid", 2, 0.5),
    ("trapezoid", 3, 0.5),
    ("gauss_legendre", 1, 0.5),
    ("gauss_legendre", 5, 0.5),
]


@pytest.mark.parametrize("classes", [1, 2])
@pytest.mark.parametrize(("rule", "n", "c"), RULE_CASES, ids=[f"{r}-{n}" for r, n, _ in RULE_CASES])
def test_ig_rule_nodes_on_a_quadratic(rule, n, c, classes):
    model = SumOfSquares(classes)
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 2 - 1
    params = {"n_steps": n, "rule": rule, "baseline": UNIFORM}
    result = adapter("integrated_gradients", params, model, x, torch.zeros(3, dtype=torch.long))

    b = uniform_batch(x)
    expected = (x - b) * 2 * (b + c * (x - b))  # left n=1: 2x', right n=1: 2x, midpoint: x + x'
    torch.testing.assert_close(result.values, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(result.output_at_input, (x**2).sum(1), rtol=1e-14, atol=0)
    torch.testing.assert_close(result.output_at_baseline, (b**2).sum(1), rtol=1e-14, atol=0)


def test_probe_mean_baseline_is_the_mean_of_the_probe():
    model = linear_model()
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64) + 2.0
    config = {"methods": {"integrated_gradients": {"n_steps": 3, "baseline": "probe_mean"}}}
    report = _audit(model, x.numpy(), config)

    mean = x.mean(dim=0, keepdim=True)
    t = (x @ W.T + B).argmax(dim=1)
    ig = report.methods["integrated_gradients"]
    # The engine keeps the mean in float32: 1e-7 of ~2.5 against differences of ~0.3.
    np.testing.assert_allclose(ig.attributions, ((x - mean) * W[t]).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ig.completeness.output_gap, ((x - mean) * W[t]).sum(1).numpy(), rtol=1e-5)


@pytest.mark.parametrize("abs_", [True, False])
def test_saliency_of_a_linear_model_is_its_weight_row(abs_):
    model = linear_model()
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    t = torch.tensor([0, 1, 2])
    params = {} if abs_ else {"abs": False}
    values = adapter("saliency", params, model, x, t).values
    expected = W[t].abs() if abs_ else W[t]
    torch.testing.assert_close(values, expected, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------
# Artifact upload retries, through log_report and a real tracking store


class _FlakyUpload:
    """MlflowClient.log_artifacts that fails ``failures`` times, then uploads for real."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[str] = []
        self.real = MlflowClient.log_artifacts

    def method(self):
        def log_artifacts(client, run_id, local_dir, artifact_path=None):
            self.calls.append(artifact_path)
            if len(self.calls) <= self.failures:
                raise ConnectionError(f"upload attempt {len(self.calls)} failed")
            return self.real(client, run_id, local_dir, artifact_path=artifact_path)

        return log_artifacts


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    """One sqlite tracking store for the tests below (creating its tables takes seconds); each
    test opens its own run. The same setup and cleanup as conftest's ``tracking_store``."""
    folder = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        patch.chdir(folder)
        mlflow.set_tracking_uri(uri)
        try:
            yield uri
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.tracking.fluent._active_experiment_id = None


def _small_report():
    x = torch.rand(2, 4, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    return _audit(linear_model(), x.numpy(), {"methods": {"saliency": {}}})


def _patch_upload(monkeypatch, failures: int) -> tuple[_FlakyUpload, list[float]]:
    flaky, delays = _FlakyUpload(failures), []
    monkeypatch.setattr(MlflowClient, "log_artifacts", flaky.method())
    # with_retries binds time.sleep as its keyword default: replace the default, not time.sleep.
    monkeypatch.setitem(tracking.with_retries.__kwdefaults__, "sleep", delays.append)
    return flaky, delays


def test_log_report_retries_the_upload_then_lands_the_artifacts(shared_store, monkeypatch):
    report = _small_report()
    flaky, delays = _patch_upload(monkeypatch, failures=2)
    with mlflow.start_run() as run:
        tracking.log_report(report, run.info.run_id)

    assert flaky.calls == [tracking.ARTIFACT_PATH] * 3
    assert delays == [1.0, 2.0]
    client = MlflowClient()
    landed = {f.path for f in client.list_artifacts(run.info.run_id, tracking.ARTIFACT_PATH)}
    assert f"{tracking.ARTIFACT_PATH}/summary.json" in landed
    finished = client.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.metrics["xai/saliency/samples"] == 2.0


def test_log_report_fails_the_run_after_the_last_retry(shared_store, monkeypatch):
    report = _small_report()
    flaky, delays = _patch_upload(monkeypatch, failures=99)
    with pytest.raises(ConnectionError, match="attempt 4"):
        with mlflow.start_run() as run:
            tracking.log_report(report, run.info.run_id)

    assert len(flaky.calls) == 4 and delays == [1.0, 2.0, 4.0]
    failed = MlflowClient().get_run(run.info.run_id)
    assert failed.info.status == "FAILED"
    assert "xai.verdict" not in failed.data.tags  # nothing is logged as if the upload had worked
    assert not failed.data.metrics
    assert MlflowClient().list_artifacts(run.info.run_id) == []
