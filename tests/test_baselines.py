"""Baselines: every kind, its config keys, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlflow_xai.attribution.baselines import gaussian_blur, make_baseline, make_baseline_distribution
from mlflow_xai.config import BaselineConfig, load_config
from mlflow_xai.errors import ConfigError, ProbeError


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_shorthand_and_zeros(x):
    config = BaselineConfig.model_validate("zeros")
    assert config.kind == "zeros"
    baseline = make_baseline(config, x)
    assert baseline.shape == x.shape and baseline.dtype == x.dtype
    assert torch.count_nonzero(baseline) == 0


def test_constant(x):
    baseline = make_baseline(BaselineConfig(kind="constant", value=0.25), x)
    assert torch.all(baseline == 0.25)


def test_blur_keeps_constants_and_smooths_a_spike():
    flat = torch.full((1, 2, 7, 7), 0.5, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat, atol=1e-12, rtol=0)
    spike = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    spike[0, 0, 4, 4] = 1.0
    blurred = gaussian_blur(spike, 1.0)
    # Mass is kept away from the border, the peak spreads, and the result is symmetric.
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert blurred[0, 0, 4, 4] < 0.2
    assert torch.allclose(blurred, blurred.flip(-1)) and torch.allclose(blurred, blurred.transpose(-1, -2))


def test_blur_baseline_is_per_input(x):
    baseline = make_baseline(BaselineConfig(kind="blur", sigma=1.0), x)
    assert torch.allclose(baseline[0], gaussian_blur(x[:1], 1.0)[0])
    assert not torch.allclose(baseline[0], baseline[1])


def test_blur_needs_spatial_axes():
    with pytest.raises(ProbeError, match="spatial axes"):
        make_baseline(BaselineConfig(kind="blur"), torch.zeros(4, 10))


def test_uniform_is_seeded_and_bounded(x):
    config = BaselineConfig(kind="uniform", low=-0.5, high=0.5, seed=3)
    first, second = make_baseline(config, x), make_baseline(config, x)
    assert torch.equal(first, second)
    assert float(first.min()) >= -0.5 and float(first.max()) < 0.5
    other = make_baseline(BaselineConfig(kind="uniform", low=-0.5, high=0.5, seed=4), x)
    assert not torch.equal(first, other)


def test_probe_mean(x):
    mean = torch.linspace(0, 1, 3 * 9 * 9).reshape(3, 9, 9)
    baseline = make_baseline(BaselineConfig(kind="probe_mean"), x, probe_mean=mean)
    assert torch.allclose(baseline[1], mean.double())
    with pytest.raises(ConfigError, match="probe_mean"):
        make_baseline(BaselineConfig(kind="probe_mean"), x)


def test_file(tmp_path, x):
    one = np.arange(3 * 9 * 9, dtype=np.float32).reshape(3, 9, 9)
    path = tmp_path / "baseline.npy"
    np.save(path, one)
    baseline = make_baseline(BaselineConfig(kind="file", path=str(path)), x)
    assert baseline.shape == x.shape
    assert np.array_equal(baseline[1].numpy(), one.astype(np.float64))

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, one[:, :4])
    with pytest.raises(ProbeError, match=r"shape \[3, 4, 9\].*\[3, 9, 9\]"):
        make_baseline(BaselineConfig(kind="file", path=str(wrong)), x)
    with pytest.raises(ConfigError, match="does not exist"):
        make_baseline(BaselineConfig(kind="file", path=str(tmp_path / "missing.npy")), x)


def test_distribution(x):
    uniform = make_baseline_distribution(BaselineConfig(kind="uniform"), x, 5)
    assert uniform.shape == (5, 3, 9, 9)
    assert make_baseline_distribution(BaselineConfig(kind="constant", value=1.0), x, 5).shape == (1, 3, 9, 9)
    with pytest.raises(ConfigError, match="blur"):
        make_baseline_distribution(BaselineConfig(kind="blur"), x, 5)


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        ({"kind": "zeros", "sigma": 1.0}, "sigma does not apply to baseline kind 'zeros'"),
        (
            {"kind": "constant", "low": 0.0},
            "low does not apply to baseline kind 'constant', which takes value",
        ),
        ({"kind": "uniform", "low": 1.0, "high": 0.0}, "low must be < high"),
        ({"kind": "file"}, "needs a path to a .npy file"),
        ({"kind": "file", "path": "x.png"}, "needs a path to a .npy file"),
        ({"kind": "blur", "sigma": 0.0}, "sigma must be a number > 0"),
        ({"kind": "gradient"}, "kind must be one of 'zeros', 'constant', 'blur'"),
        ("gradient", "kind must be one of"),
    ],
)
def test_config_errors(baseline, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config({"methods": {"integrated_gradients": {"baseline": baseline}}})
