"""A newcomer's first try: the defaults on models the package was not built around.

Small stand-ins for real models (a resnet18 at 64 px, a grayscale 1x28x28 CNN, a tabular MLP);
the 224 px runs live in benchmarks/real_models.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from mlflow_xai.cli import main
from mlflow_xai.config import OcclusionConfig, load_config
from mlflow_xai.engine import audit
from mlflow_xai.errors import ProbeError


def grayscale_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 14 * 14, 10)
    ).eval()


def tabular_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 3)).eval()


def resnet18_64px() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()  # random weights: nothing downloaded


@pytest.mark.parametrize(
    ("make_model", "shape"),
    [(grayscale_cnn, (1, 28, 28)), (tabular_mlp, (20,)), (resnet18_64px, (3, 64, 64))],
    ids=["grayscale_1x28x28", "tabular_20", "resnet18_64px"],
)
def test_the_defaults_audit_any_input_shape(make_model, shape):
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0)).numpy()
    report = audit(make_model(), x, {"artifacts": {"sheet_samples": 1}})  # every method default
    assert set(report.methods) == {"integrated_gradients", "occlusion"}
    for result in report.methods.values():
        values = np.asarray(result.attributions, np.float32)
        assert values.shape == (2, *shape) and np.isfinite(values).all() and np.abs(values).max() > 0


@pytest.mark.parametrize(
    ("shape", "window", "strides"),
    [
        ((3, 224, 224), [3, 56, 56], [3, 28, 28]),
        ((3, 32, 32), [3, 8, 8], [3, 4, 4]),
        ((1, 28, 28), [1, 7, 7], [1, 4, 4]),
        ((3, 5, 7), [3, 2, 2], [3, 1, 1]),
        ((20,), [1], [1]),
    ],
)
def test_auto_occlusion_windows_follow_the_input(shape, window, strides):
    assert OcclusionConfig().resolve(shape) == (window, strides)
    # A window given by hand keeps it; its strides still default to half of it.
    assert OcclusionConfig(sliding_window_shapes=[1, 4, 4]).resolve((1, 28, 28)) == ([1, 4, 4], [1, 2, 2])


def test_tabular_occlusion_by_default_is_one_feature_at_a_time():
    # A linear model: occluding feature i (baseline 0) drops the output by exactly w_i x_i.
    torch.manual_seed(0)
    model = nn.Linear(6, 2).double().eval()
    x = torch.rand(3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64).numpy()
    config = {"target": 1, "methods": {"occlusion": {}}, "artifacts": {"mask_dtype": "float32"}}
    report = audit(model, x, config)
    expected = x * model.weight[1].detach().numpy()
    np.testing.assert_allclose(np.asarray(report.methods["occlusion"].attributions), expected, rtol=1e-6)


def test_auto_windows_with_strides_that_do_not_fit_are_refused_before_any_compute():
    config = {"methods": {"occlusion": {"strides": [1, 1]}}}
    with pytest.raises(ProbeError, match=r"strides \[1, 1\] and sliding_window_shapes \[1, 7, 7\]"):
        audit(grayscale_cnn(), np.zeros((2, 1, 28, 28), np.float32), config)


def test_validate_config_shows_what_the_defaults_resolve_to(capsys):
    assert main(["validate-config", "--input-shape", "3,224,224"]) == 0
    out = capsys.readouterr().out
    assert "the built-in defaults: valid" in out
    assert "sliding_window_shapes [3, 56, 56], strides [3, 28, 28] (49 windows per sample)" in out
    assert "integrated_gradients on inputs of shape [3, 224, 224]: internal_batch_size 27 " in out
    assert main(["validate-config", "--input-shape", "3,a"]) == 2
    assert "--input-shape must be positive integers" in capsys.readouterr().err


def test_the_old_fixed_default_is_gone():
    # [3, 8, 8] failed on every input smaller than 3x8x8 or with another channel count.
    assert load_config({}).methods.occlusion.sliding_window_shapes == "auto"


@pytest.mark.parametrize(
    ("values", "points"),
    [
        (1, 512),
        (20, 512),
        (3 * 32 * 32, 512),
        (8192, 512),
        (8193, 511),
        (3 * 64 * 64, 341),
        (3 * 224 * 224, 27),
        (3 * 4096 * 4096, 1),
    ],
)
def test_ig_points_per_pass_shrink_with_the_input(values, points):
    # auto: at most 512 points and at most 2^22 input values a pass.
    assert load_config({}).methods.integrated_gradients.points_per_pass(values) == points
    fixed = load_config({"methods": {"integrated_gradients": {"internal_batch_size": 700}}})
    assert fixed.methods.integrated_gradients.points_per_pass(values) == 700


class _PassCounter(nn.Module):
    """A small CNN on 3x128x128 that records the batch of every pass that needs gradients."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 2, 5, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 31 * 31, 4)
        )
        self.passes: list[int] = []

    def forward(self, x):
        if x.requires_grad:
            self.passes.append(len(x))
        return self.net(x)


def test_ig_by_default_passes_at_most_2_22_input_values():
    # 3x128x128 = 49,152 values: 85 points a pass, so 4 samples x 32 steps take two passes of 21
    # steps for every sample (84 points) and one of the rest; 512 points a pass would take one.
    model = _PassCounter().eval()
    x = np.random.default_rng(0).random((4, 3, 128, 128), dtype=np.float32)
    audit(model, x, {"methods": {"integrated_gradients": {}}, "artifacts": {"sheet_samples": 0}})
    # (The first pass is preflight's check of the gradient path on one sample.)
    assert model.passes == [1, 84, 44]
    model.passes.clear()
    audit(
        model,
        x,
        {
            "methods": {"integrated_gradients": {"internal_batch_size": 512}},
            "artifacts": {"sheet_samples": 0},
        },
    )
    assert model.passes == [1, 128]
