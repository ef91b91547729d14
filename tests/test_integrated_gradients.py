"""Integrated Gradients: quadrature rules with answers known on paper, and adaptive steps."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from mlflow_xai.methods.integrated_gradients import integrated_gradients
from mlflow_xai.quadrature import RULES, nodes_and_weights

DTYPE = torch.float64


def _target_column(model: nn.Module):
    def f(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return model(x).gather(1, target.view(-1, 1)).squeeze(1)

    return f


def _seeded(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


@pytest.fixture(scope="module")
def smooth_mlp() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    return model.to(DTYPE).eval()


# --------------------------------------------------------------------------------------------------
# Quadrature rules


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("n_steps", [2, 7, 32])
def test_weights_sum_to_one_and_nodes_lie_in_unit_interval(rule: str, n_steps: int) -> None:
    nodes, weights = nodes_and_weights(rule, n_steps)
    assert nodes.shape == weights.shape == (n_steps,)
    assert abs(weights.sum() - 1.0) < 1e-15
    assert nodes.min() >= 0.0 and nodes.max() <= 1.0


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("n_steps", [2, 5, 16])
def test_ig_of_linear_model_is_exact_for_every_rule(rule: str, n_steps: int) -> None:
    linear = nn.Linear(5, 3).to(DTYPE)
    x, baseline = _seeded(1, 4, 5), _seeded(2, 4, 5)
    target = torch.tensor([0, 1, 2, 1])
    attr = integrated_gradients(_target_column(linear), x, baseline, target, n_steps=n_steps, rule=rule)
    expected = (x - baseline) * linear.weight.detach()[target]
    assert torch.allclose(attr, expected, rtol=1e-6, atol=0.0)


def _relu_paper_model(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # F(x) = ReLU(ReLU(x1) - 1 - ReLU(x2)), the example of Sundararajan et al. (2017), section 2.
    return torch.relu(torch.relu(x[:, 0]) - 1.0 - torch.relu(x[:, 1]))


@pytest.mark.parametrize(
    ("rule", "n_steps"),
    # The integrand jumps at alpha = 1/2: these rules place no node on the jump and split it exactly.
    [("midpoint", 8), ("gauss_legendre", 8), ("gauss_legendre", 64), ("trapezoid", 4), ("trapezoid", 64)],
)
def test_ig_paper_example(rule: str, n_steps: int) -> None:
    x = torch.tensor([[3.0, 1.0]], dtype=DTYPE)
    attr = integrated_gradients(
        _relu_paper_model,
        x,
        torch.zeros_like(x),
        torch.zeros(1, dtype=torch.long),
        n_steps=n_steps,
        rule=rule,
    )
    assert torch.allclose(attr, torch.tensor([[1.5, -0.5]], dtype=DTYPE), atol=1e-12)


@pytest.mark.parametrize("rule", RULES)
def test_ig_paper_example_converges_for_every_rule(rule: str) -> None:
    # Whatever the rule does at the jump, its error is at most one node's weight.
    x = torch.tensor([[3.0, 1.0]], dtype=DTYPE)
    attr = integrated_gradients(
        _relu_paper_model,
        x,
        torch.zeros_like(x),
        torch.zeros(1, dtype=torch.long),
        n_steps=301,
        rule=rule,
    )
    assert torch.allclose(attr, torch.tensor([[1.5, -0.5]], dtype=DTYPE), atol=3 * 2.0 / 300)


def _ig_error(model: nn.Module, rule: str, n_steps: int, reference: torch.Tensor) -> float:
    x, baseline = _seeded(3, 8, 6), torch.zeros(8, 6, dtype=DTYPE)
    target = torch.arange(8) % 3
    attr = integrated_gradients(_target_column(model), x, baseline, target, n_steps=n_steps, rule=rule)
    return float((attr - reference).norm() / reference.norm())


@pytest.fixture(scope="module")
def smooth_reference(smooth_mlp: nn.Module) -> torch.Tensor:
    x, baseline = _seeded(3, 8, 6), torch.zeros(8, 6, dtype=DTYPE)
    target = torch.arange(8) % 3
    return integrated_gradients(
        _target_column(smooth_mlp), x, baseline, target, n_steps=512, rule="gauss_legendre"
    )


@pytest.mark.parametrize(
    ("rule", "n_steps", "order"),
    [
        ("left", 64, 1.0),
        ("right", 64, 1.0),
        ("midpoint", 32, 2.0),
        # n nodes are n - 1 intervals: 33 -> 65 nodes doubles the intervals from 32 to 64.
        ("trapezoid", 33, 2.0),
    ],
)
def test_observed_convergence_order_on_smooth_model(
    smooth_mlp: nn.Module, smooth_reference: torch.Tensor, rule: str, n_steps: int, order: float
) -> None:
    coarse = _ig_error(smooth_mlp, rule, n_steps, smooth_reference)
    fine_steps = 2 * n_steps - 1 if rule == "trapezoid" else 2 * n_steps
    fine = _ig_error(smooth_mlp, rule, fine_steps, smooth_reference)
    observed = math.log2(coarse / fine)
    assert abs(observed - order) < 0.05, f"{rule}: observed order {observed:.3f}, expected {order}"


def test_gauss_legendre_converges_much_faster_on_smooth_model(
    smooth_mlp: nn.Module, smooth_reference: torch.Tensor
) -> None:
    errors = {n: _ig_error(smooth_mlp, "gauss_legendre", n, smooth_reference) for n in (4, 8, 16)}
    midpoint_16 = _ig_error(smooth_mlp, "midpoint", 16, smooth_reference)
    # Spectral convergence: each doubling gains far more than the factor 4 of a second-order rule.
    assert errors[4] / errors[8] > 30
    assert errors[16] < 1e-9
    assert errors[8] < midpoint_16 / 100
