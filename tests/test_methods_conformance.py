"""One conformance suite for every registered attribution method.

A method added to the registry is covered automatically: it runs with its default parameters unless
``PARAMS`` says otherwise (only to keep this file fast, or for required keys such as a layer).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from mlflow_xai.attribution.methods import AttributionMethod, build, register, registered
from mlflow_xai.config import load_config
from mlflow_xai.engine import audit
from mlflow_xai.errors import ConfigError, ModelError
from mlflow_xai.model import ModelHandle, audit_mode

_MASK = {"feature_mask": {"kind": "grid", "patch_size": 4}}
PARAMS: dict[str, dict] = {
    "integrated_gradients": {"n_steps": 64},
    "occlusion": {"sliding_window_shapes": [3, 4, 4], "strides": [3, 4, 4]},
    "gradient_shap": {"n_samples": 8, "stdevs": 0.05, "baseline": {"kind": "uniform"}},
    "deeplift_shap": {"n_baselines": 3},
    "guided_gradcam": {"layer": "conv2"},
    "layer_gradcam": {"layer": "conv2"},
    "feature_ablation": _MASK,
    "shapley_value_sampling": {**_MASK, "n_samples": 2},
    "kernel_shap": {**_MASK, "n_samples": 16},
    "lime": {**_MASK, "n_samples": 16},
    "noise_tunnel": {"method": "saliency", "nt_samples": 3},
}
# Variants beyond each method's entry: wrappers around hook-based methods, superpixel masks. The
# methods over tokens (text probes) have their own suite in test_text.py.
IMAGE_METHODS = sorted(name for name, method in registered().items() if not method.for_text)
VARIANTS: list[tuple[str, str, dict]] = [
    *((name, name, PARAMS.get(name, {})) for name in IMAGE_METHODS),
    ("noise_tunnel", "noise_tunnel[deeplift]", {"method": "deeplift", "nt_samples": 2, "nt_type": "vargrad"}),
    (
        "noise_tunnel",
        "noise_tunnel[guided_gradcam]",
        {"method": "guided_gradcam", "params": {"layer": "conv1"}, "nt_type": "smoothgrad_sq"},
    ),
    ("kernel_shap", "kernel_shap[superpixel]", {"feature_mask": {"kind": "superpixel"}, "n_samples": 16}),
]
IDS = [variant for _, variant, _ in VARIANTS]
# Relative completeness tolerances: exact methods get float error only, sampled ones their noise.
COMPLETENESS_TOLERANCE = {"deeplift": 1e-8, "deeplift_shap": 1e-8, "integrated_gradients": 0.05}


class TinyCNN(nn.Module):
    """Two conv blocks with distinct ReLU modules, pooling and a linear head: 3x12x12 -> 3.

    Average pooling, not max: Captum's DeepLift max-pool rule keeps summation to delta only when the
    input and the baseline share each window's maximum (with a random baseline we measured errors
    of the order of F(x) - F(x') itself), so it cannot show that DeepLift is exact.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu1(self.conv1(x)))
        return self.head(self.gap(self.relu2(self.conv2(x))).flatten(1))


def tiny_model(dtype: torch.dtype = torch.float32) -> TinyCNN:
    torch.manual_seed(0)
    model = TinyCNN()
    with torch.no_grad():  # default init gives near-constant outputs; make them vary with the input
        for layer in (model.conv1, model.conv2, model.head):
            layer.weight.mul_(4.0)
    return model.to(dtype).eval()


def inputs(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=dtype)


def method_config(name: str, params: dict):
    return load_config({"methods": {name: params}}).methods.enabled()[name]


def run(name: str, params: dict, model: nn.Module, x: torch.Tensor):
    method = build(name, method_config(name, params))
    handle = ModelHandle(model, torch.device("cpu"))
    with audit_mode(model):
        target = handle.scores(x).argmax(dim=1)
        return method, method.attribute(handle, x, target), target


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS, ids=IDS)
def test_shape_and_finite(name, variant, params):
    x = inputs()
    _, result, _ = run(name, params, tiny_model(), x)
    assert result.values.shape == x.shape
    assert result.values.dtype == x.dtype
    assert torch.isfinite(result.values).all()
    assert not result.values.requires_grad


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS, ids=IDS)
def test_deterministic_under_seed(name, variant, params):
    model, x = tiny_model(), inputs()
    torch.manual_seed(123)
    _, first, _ = run(name, params, model, x)
    torch.manual_seed(456)  # the global generator differs; the method's own seed must decide
    _, second, _ = run(name, params, model, x)
    assert torch.equal(first.values, second.values)


def _hooks_left(model: nn.Module) -> list[str]:
    found = []
    for module_name, module in model.named_modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_forward_hooks_with_kwargs",
            "_forward_pre_hooks_with_kwargs",
        ):
            if getattr(module, attr, None):
                found.append(f"{module_name or 'model'}.{attr}")
    for param_name, param in model.named_parameters():
        if getattr(param, "_backward_hooks", None):
            found.append(f"{param_name}._backward_hooks")
    return found


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS, ids=IDS)
def test_audit_restores_the_model(name, variant, params):
    model = tiny_model()
    model.train()
    model.head.eval()  # a mixed state must come back exactly
    model.conv1.weight.requires_grad_(False)
    training = {n: m.training for n, m in model.named_modules()}
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    config = {"methods": {name: params}, "batch_size": 4, "artifacts": {"sheet_samples": 0}}
    report = audit(model, inputs().numpy(), config)

    assert report.methods[name].attributions.shape == (4, 3, 12, 12)
    assert _hooks_left(model) == []
    assert {n: m.training for n, m in model.named_modules()} == training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == requires_grad
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())


def _completeness_cases() -> list[tuple[str, str, dict]]:
    return [case for case in VARIANTS if build(case[0], method_config(case[0], case[2])).has_completeness]


@pytest.mark.parametrize(
    ("name", "variant", "params"), _completeness_cases(), ids=[case[1] for case in _completeness_cases()]
)
def test_completeness_where_claimed(name, variant, params):
    model, x = tiny_model(torch.float64), inputs(torch.float64)
    if "baseline" in method_config(name, params).model_fields:
        # Baselines far from the inputs in [0, 1], so that F(x) - F(x') is not near zero.
        baseline = {"kind": "uniform", "low": -1.0, "high": -0.5}
        params = {**params, "baseline": baseline if name.endswith("_shap") else "zeros"}
    if name == "gradient_shap":
        # Completeness holds only in expectation: many draws, no input noise, a loose tolerance.
        params = {**params, "n_samples": 4000, "stdevs": 0.0}
    _, result, _ = run(name, params, model, x)
    total = result.values.flatten(1).sum(dim=1)
    delta = result.output_at_input - result.output_at_baseline
    assert result.output_at_input.shape == result.output_at_baseline.shape == (4,)
    assert delta.abs().min() > 1e-3  # a non-degenerate case, so the relative error means something
    tolerance = COMPLETENESS_TOLERANCE.get(name, 0.1 if name == "gradient_shap" else 0.01)
    relative_error = ((total - delta).abs() / delta.abs()).max().item()
    assert relative_error <= tolerance, f"{variant}: completeness error {relative_error:.3g}"
    print(f"{variant}: completeness relative error {relative_error:.3g}, min |delta| {delta.abs().min():.3g}")


def test_the_completeness_cases_include_the_exact_ones():
    names = {case[0] for case in _completeness_cases()}
    assert {"integrated_gradients", "deeplift", "deeplift_shap", "gradient_shap"} <= names


def exported(model: nn.Module, x: torch.Tensor) -> nn.Module:
    # As MLflow's pt2 format saves it: an exported graph with a dynamic batch axis.
    dims = ({0: torch.export.Dim.AUTO},)
    return torch.export.export(model, (x,), dynamic_shapes=dims).module()


@pytest.mark.parametrize(("name", "variant", "params"), VARIANTS, ids=IDS)
def test_exported_graph_runs_or_refuses(name, variant, params):
    x = inputs()
    graph = exported(tiny_model(), x)
    method = build(name, method_config(name, params))
    assert ModelHandle(graph, torch.device("cpu")).exported
    if method.needs_hooks:
        with pytest.raises(ModelError, match='serialization_format="pickle"'):
            audit(graph, x.numpy(), {"methods": {name: params}})
    else:
        report = audit(graph, x.numpy(), {"methods": {name: params}})
        values = report.methods[name].attributions
        assert values.shape == tuple(x.shape) and np.isfinite(values).all()


def test_hook_methods_are_marked():
    hooked = {case[1] for case in VARIANTS if build(case[0], method_config(case[0], case[2])).needs_hooks}
    assert hooked == {
        "deeplift",
        "deeplift_shap",
        "guided_backprop",
        "deconvolution",
        "guided_gradcam",
        "layer_gradcam",
        "noise_tunnel[deeplift]",
        "noise_tunnel[guided_gradcam]",
    }


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="'saliency' is already registered by Saliency"):

        @register("saliency")
        class Another(AttributionMethod):
            pass

    assert registered()["saliency"].__name__ == "Saliency"


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        ({"noise_tunnel": {"method": "occlusion"}}, "methods.noise_tunnel.method must be one of 'saliency'"),
        ({"noise_tunnel": {}}, "methods.noise_tunnel.method must be one of"),
        (
            {"noise_tunnel": {"method": "saliency", "params": {"n_steps": 3}}},
            "methods.noise_tunnel: params of 'saliency': unknown key 'n_steps'",
        ),
        (
            {"noise_tunnel": {"method": "guided_gradcam"}},
            "params of 'guided_gradcam': layer is required",
        ),
        (
            {"noise_tunnel": {"method": "saliency", "nt_type": "smooth"}},
            "nt_type must be one of 'smoothgrad'",
        ),
        (
            {"noise_tunnel": {"method": "saliency", "nt_samples": 0}},
            "nt_samples must be an integer >= 1, got 0",
        ),
        ({"layer_gradcam": None}, "methods.layer_gradcam: layer is required"),
        ({"layer_gradcam": {"layer": ""}}, "methods.layer_gradcam.layer must be a string"),
        ({"guided_gradcam": {}}, "methods.guided_gradcam: layer is required"),
        ({"saliency": {"abs": "yes"}}, "methods.saliency.abs must be true or false"),
        (
            {"gradient_shap": {"n_samples": "8"}},
            'methods.gradient_shap.n_samples must be an integer >= 1, got "8"',
        ),
        (
            {"gradient_shap": {"stdevs": -1.0}},
            "methods.gradient_shap.stdevs must be a number >= 0.0, got -1.0",
        ),
        ({"deeplift": {"eps": 0.0}}, "methods.deeplift.eps must be a number > 0.0"),
        ({"input_x_gradient": {"abs": True}}, "unknown key 'abs' in methods.input_x_gradient"),
        (
            {"lime": {"feature_mask": {"kind": "grid", "n_segments": 4}}},
            "n_segments not used by feature mask kind 'grid', which takes patch_size",
        ),
        ({"lime": {"interpretable_model": "linear_regression", "alpha": 1.0}}, "alpha does not apply"),
        ({"kernel_shap": {"feature_mask": {"kind": "slic"}}}, "feature_mask.kind must be one of 'grid'"),
        ({"saliencyy": {}}, "unknown key 'saliencyy' in methods; valid keys: deconvolution, deeplift"),
    ],
)
def test_config_errors(methods, message):
    with pytest.raises(ConfigError) as caught:
        load_config({"methods": methods})
    assert message in str(caught.value)


@pytest.mark.parametrize("name", ["layer_gradcam", "guided_gradcam"])
def test_unknown_layer_lists_valid_names(name):
    with pytest.raises(
        ModelError, match=r"'features\.conv3' is not a module of the model; valid names include: conv1, conv2"
    ):
        run(name, {"layer": "features.conv3"}, tiny_model(), inputs())


def test_layer_without_spatial_axes_is_refused():
    with pytest.raises(ModelError, match="keeps the input's spatial axes"):
        run("layer_gradcam", {"layer": "head"}, tiny_model(), inputs())


def test_layer_gradcam_broadcasts_over_channels():
    _, result, _ = run("layer_gradcam", {"layer": "conv2"}, tiny_model(), inputs())
    values = result.values
    assert torch.equal(values[:, 0], values[:, 1]) and torch.equal(values[:, 0], values[:, 2])
    assert (values >= 0).all()  # relu_attributions defaults to true
    assert values.flatten(1).std(dim=1).min() > 0  # resized, not a constant


def test_guided_backprop_refuses_functional_relu():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)
            self.head = nn.Linear(2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    torch.manual_seed(0)
    with pytest.raises(ModelError, match="has none"):
        run("guided_backprop", {}, Functional(), inputs())


def test_seed_changes_random_methods():
    model, x = tiny_model(), inputs()
    _, first, _ = run("kernel_shap", PARAMS["kernel_shap"], model, x)
    _, second, _ = run("kernel_shap", {**PARAMS["kernel_shap"], "seed": 1}, model, x)
    assert not torch.equal(first.values, second.values)


# --------------------------------------------------------------------------------------------------
# The shipped configs: each loads and runs on a freshly trained example model.

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SHIPPED_CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


@pytest.fixture(scope="module")
def shapes_model_and_probe():
    from mlflow_xai.datasets import make_shapes
    from mlflow_xai.datasets.cnn import train_shapes_cnn

    train = make_shapes(64, seed=0)
    probe = make_shapes(8, seed=1)
    return train_shapes_cnn(train, epochs=1, batch_size=32, width=8), probe


def test_the_shipped_configs_are_there():
    assert {p.name for p in SHIPPED_CONFIGS} >= {"default.yaml", "review.yaml", "ci-gate.yaml"}


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=[p.name for p in SHIPPED_CONFIGS])
def test_shipped_config_runs(path, shapes_model_and_probe):
    model, probe = shapes_model_and_probe
    config = load_config(path, max_samples=4)
    report = audit(model, probe.images, config, labels=probe.labels)
    assert set(report.methods) == set(config.methods.enabled())
    for result in report.methods.values():
        assert result.attributions.shape == (4, *probe.images.shape[1:])
        assert np.isfinite(np.asarray(result.attributions, dtype=np.float64)).all()
    assert _hooks_left(model) == []
