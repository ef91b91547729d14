"""Integrated Gradients: quadrature rules with answers known on paper, and adaptive steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import rel_error as _rel_error
from helpers import target_column as _target_column

from mlflow_xai.attribution.adaptive import ENDPOINT_OFFSET, adaptive_integrated_gradients
from mlflow_xai.attribution.methods.integrated_gradients import integrated_gradients
from mlflow_xai.attribution.path_profiles import ig_path_profiles
from mlflow_xai.attribution.quadrature import RULES, nodes_and_weights
from mlflow_xai.checks.convergence import spearman_rank_correlation, step_change_rel_l2
from mlflow_xai.config import load_config
from mlflow_xai.errors import ConfigError

DTYPE = torch.float64


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


# --------------------------------------------------------------------------------------------------
# Convergence measures


def test_spearman_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(5)
    a = torch.randint(0, 6, (4, 40), generator=gen).double()  # many ties
    b = a + torch.randn(4, 40, generator=gen, dtype=DTYPE) * 2
    b[:, :10] = 0.0
    ours = spearman_rank_correlation(a, b)
    for i in range(4):
        expected = stats.spearmanr(a[i].numpy(), b[i].numpy()).statistic
        assert float(ours[i]) == pytest.approx(expected, abs=1e-12)


def test_step_change_rel_l2() -> None:
    fine = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]], dtype=DTYPE)
    coarse = torch.tensor([[3.0, 3.0], [0.0, 0.0], [1.0, 0.0]], dtype=DTYPE)
    change = step_change_rel_l2(coarse, fine)
    assert change[0] == pytest.approx(0.2)
    assert change[1] == 0.0 and math.isinf(change[2])


# --------------------------------------------------------------------------------------------------
# Adaptive steps


class _CountingOutput:
    """An explained output that counts (and keeps) the path points it differentiates."""

    def __init__(self, f) -> None:
        self.f = f
        self.points: list[torch.Tensor] = []

    @property
    def path_points(self) -> int:
        return sum(len(p) for p in self.points)

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            self.points.append(x.detach().clone())
        return self.f(x, target)


def _kinked(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Linear along the path while x1 < 1; with x1 > 1 the gradient jumps at alpha = 1 / x1.
    return torch.relu(x[:, 0] - 1.0) * 2.0 + x[:, 1]


def test_adaptive_refines_only_unconverged_samples_and_reuses_every_gradient() -> None:
    x = torch.tensor([[0.5, 1.0], [3.0, 1.0], [0.9, -2.0], [7.0, 0.5]], dtype=DTYPE)
    f = _CountingOutput(_kinked)
    result = adaptive_integrated_gradients(
        f, x, torch.zeros_like(x), torch.zeros(4, dtype=torch.long), min_steps=8
    )
    steps = result.steps.tolist()
    # Samples 0 and 2 are linear along their paths: converged at the first check (4 -> 8 intervals).
    assert steps[0] == steps[2] == 9
    assert steps[1] > 9 and steps[3] > 9
    assert result.converged.all()
    # Every evaluated point counts once: 9 to start, then two per split interval.
    assert f.path_points == sum(steps)
    assert all(s % 2 == 1 for s in steps)
    exact = torch.tensor([[0.0, 1.0], [4.0, 1.0], [0.0, -2.0], [12.0, 0.5]], dtype=DTYPE)
    error = step_change_rel_l2(result.attributions, exact)
    assert (error <= 0.02).all()
    assert torch.allclose(result.attributions[[0, 2]], exact[[0, 2]], atol=1e-12)


def test_adaptive_refines_only_the_intervals_around_the_kink() -> None:
    # Along the path of x = (3, 1) the gradient jumps once, at alpha = 1/3, inside the first
    # partition's interval [1/4, 1/2]: every linear interval is exact, so none of them is split.
    x = torch.tensor([[3.0, 1.0]], dtype=DTYPE)
    f = _CountingOutput(_kinked)
    result = adaptive_integrated_gradients(
        f, x, torch.zeros_like(x), torch.zeros(1, dtype=torch.long), min_steps=8
    )
    alphas = torch.cat(f.points)[:, 0] / 3.0
    first, refined = alphas[:9], alphas[9:]
    # The path's two ends are evaluated just inside it (see the test below).
    expected = (torch.arange(9, dtype=DTYPE) / 8).clamp(ENDPOINT_OFFSET, 1 - ENDPOINT_OFFSET)
    assert torch.allclose(first, expected, rtol=0, atol=1e-15)
    assert len(refined) > 0 and ((refined > 0.25) & (refined < 0.5)).all()
    # Halving only the interval holding the kink: 2 new points a round, the error halving each time.
    assert result.converged.all() and int(result.steps[0]) <= 9 + 2 * 6
    exact = torch.tensor([[4.0, 1.0]], dtype=DTYPE)
    assert float(step_change_rel_l2(result.attributions, exact)[0]) <= 0.02


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_tie_at_the_baseline_itself_costs_no_refinement(dtype: torch.dtype) -> None:
    # F(x) = max(x1, x2) from a zero baseline to (1, 2): along the path F = 2 alpha, so IG is
    # exactly (0, 2). Only at alpha = 0 itself do x1 and x2 tie, and there max's gradient picks x1
    # (as a max-pool window over a zero image does). Evaluated there, that one point would weigh
    # h/2 on the first interval (a_1 = 1/32 from 16 intervals, a 1.6% step change) and, at a 0.1%
    # tolerance, keep the first interval splitting; the ends are evaluated just inside the path
    # instead, where the integrand takes its one-sided limits.
    def f(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool1d(x.unsqueeze(1), kernel_size=2).flatten()

    x = torch.tensor([[1.0, 2.0]], dtype=dtype)
    zero = torch.zeros_like(x).requires_grad_(True)
    (at_zero,) = torch.autograd.grad(f(zero, None).sum(), zero)
    assert at_zero.tolist() == [[1.0, 0.0]]  # the tie the test is about
    result = adaptive_integrated_gradients(
        f,
        x,
        torch.zeros_like(x),
        torch.zeros(1, dtype=torch.long),
        step_change_tolerance=1e-3,
        completeness_tolerance=1e-3,
    )
    assert result.steps.tolist() == [33] and result.converged.all()
    assert torch.equal(result.attributions, torch.tensor([[0.0, 2.0]], dtype=dtype))


def test_adaptive_marks_samples_that_reach_max_steps_as_not_converged() -> None:
    x = torch.tensor([[0.5, 1.0], [3.0, 1.0]], dtype=DTYPE)
    result = adaptive_integrated_gradients(
        _kinked,
        x,
        torch.zeros_like(x),
        torch.zeros(2, dtype=torch.long),
        step_change_tolerance=1e-9,
        completeness_tolerance=1e-9,
        min_steps=8,
        max_steps=40,
    )
    assert result.converged.tolist() == [True, False]
    # The finest grid that fits 40 evaluations has 32 intervals, so an interval of 1/16 (its
    # midpoint on that grid) is not split again: sample 1 halves the one around its kink from 1/4
    # to 1/16, two evaluations a halving, and stops there.
    assert result.steps.tolist() == [9, 9 + 2 * 2]
    assert result.step_change_rel_l2[1] > 1e-9


def test_adaptive_is_exact_on_a_linear_model_at_the_first_check() -> None:
    linear = nn.Linear(5, 3).to(DTYPE)
    x, baseline = _seeded(1, 4, 5), _seeded(2, 4, 5)
    target = torch.tensor([0, 1, 2, 1])
    result = adaptive_integrated_gradients(_target_column(linear), x, baseline, target, min_steps=3)
    expected = (x - baseline) * linear.weight.detach()[target]
    assert torch.allclose(result.attributions, expected, rtol=1e-6, atol=0.0)
    assert result.steps.tolist() == [3, 3, 3, 3]


def test_adaptive_meets_tolerances_on_smooth_model(smooth_mlp: nn.Module, smooth_reference) -> None:
    x, baseline = _seeded(3, 8, 6), torch.zeros(8, 6, dtype=DTYPE)
    target = torch.arange(8) % 3
    result = adaptive_integrated_gradients(
        _target_column(smooth_mlp), x, baseline, target, step_change_tolerance=1e-4
    )
    assert result.converged.all()
    error = step_change_rel_l2(result.attributions, smooth_reference)
    assert (error <= 1e-4).all()


def _nan_for_sample_0(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Sample 0 (target 0) has NaN gradients past alpha = 1/2; the others are a smooth sine.
    broken = (target == 0) & (x.detach()[:, 0] > 0.5)
    scale = torch.where(broken, float("nan"), 1.0).to(x.dtype)  # a constant: no gradient of its own
    return torch.sin(3.0 * x[:, 0]) * scale


def test_a_nan_sample_does_not_stop_the_refinement_of_the_others() -> None:
    x = torch.ones(3, 1, dtype=DTYPE)
    result = adaptive_integrated_gradients(
        _nan_for_sample_0, x, torch.zeros_like(x), torch.arange(3), step_change_tolerance=1e-4
    )
    assert result.converged.tolist() == [False, True, True]
    exact = torch.full((2, 1), math.sin(3.0), dtype=DTYPE)  # F(x) - F(0), one feature
    assert float(step_change_rel_l2(result.attributions[1:], exact).max()) <= 1e-4


def test_all_but_zero_attributions_are_judged_in_absolute_terms() -> None:
    # F = sin(2 pi x): from 0 to 1 it ends where it started, so IG is 0 to the last digit, and
    # ||a_fine - a_coarse|| / ||a_fine|| would be rounding noise over rounding noise.
    x = torch.ones(1, 1, dtype=DTYPE)
    result = adaptive_integrated_gradients(
        lambda z, t: torch.sin(2 * math.pi * z[:, 0]), x, torch.zeros_like(x), torch.zeros(1).long()
    )
    assert result.converged.all() and int(result.steps[0]) < 513
    assert float(result.attributions.abs().max()) <= 1e-6


def _cancelling(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # The two kinked terms' quadrature errors cancel exactly in the sum: completeness looks perfect.
    return torch.relu(x[:, 0] - 1.0) - torch.relu(x[:, 1] - 1.0) + x[:, 2]


def test_adaptive_refines_on_step_change_when_completeness_hides_the_error() -> None:
    x = torch.tensor([[3.0, 3.0, 1.0]], dtype=DTYPE)
    result = adaptive_integrated_gradients(
        _cancelling, x, torch.zeros_like(x), torch.zeros(1).long(), min_steps=8
    )
    assert float(result.completeness_rel_error[0]) < 1e-12
    assert int(result.steps[0]) > 9
    exact = torch.tensor([[2.0, -2.0, 1.0]], dtype=DTYPE)
    assert float(step_change_rel_l2(result.attributions, exact)[0]) <= 0.02


# --------------------------------------------------------------------------------------------------
# Config and the method adapter


def _ig_config(**ig) -> object:
    return load_config({"methods": {"integrated_gradients": ig}})


def _auto_with_check(check_tolerance: float, **ig) -> object:
    return load_config(
        {
            "methods": {"integrated_gradients": {"n_steps": "auto", **ig}},
            "checks": {"completeness": {"tolerance": check_tolerance}},
        }
    )


def test_auto_refines_to_the_completeness_checks_tolerance_unless_told_otherwise() -> None:
    assert _auto_with_check(0.005).methods.integrated_gradients.completeness_tolerance == 0.005
    tighter = _auto_with_check(0.005, completeness_tolerance=0.001)
    assert tighter.methods.integrated_gradients.completeness_tolerance == 0.001
    fixed = load_config(
        {"methods": {"integrated_gradients": {"n_steps": 16}}, "checks": {"completeness": {"tolerance": 0.5}}}
    )
    assert fixed.methods.integrated_gradients.completeness_tolerance == 0.01  # not used: fixed steps


def test_auto_with_a_looser_tolerance_than_the_check_is_an_error() -> None:
    with pytest.raises(ConfigError) as raised:
        _auto_with_check(0.005, completeness_tolerance=0.02)
    message = str(raised.value)
    assert "methods.integrated_gradients.completeness_tolerance 0.02 is looser than" in message
    assert "checks.completeness.tolerance 0.005" in message and "set it <= 0.005" in message


@pytest.mark.parametrize(
    ("ig", "message"),
    [
        (
            {"n_steps": "50"},
            """methods.integrated_gradients.n_steps must be an integer >= 1 or 'auto', got "50\"""",
        ),
        ({"n_steps": 0}, "methods.integrated_gradients.n_steps must be an integer >= 1 or 'auto', got 0"),
        ({"n_steps": "auto", "rule": "gauss_legendre"}, "does not apply with n_steps 'auto'"),
        ({"n_steps": "auto", "min_steps": 8, "max_steps": 8}, "max_steps must be >= 9"),
        ({"n_steps": "auto", "step_change_tolerance": -0.1}, "step_change_tolerance must be a number >= 0"),
    ],
)
def test_ig_config_errors(ig: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _ig_config(**ig)
    assert message in str(info.value)


def test_auto_config_is_trapezoid_and_round_trips() -> None:
    cfg = _ig_config(n_steps="auto").methods.integrated_gradients
    assert (cfg.n_steps, cfg.rule, cfg.completeness_tolerance, cfg.step_change_tolerance) == (
        "auto",
        "trapezoid",
        0.01,
        0.02,
    )
    assert type(cfg).model_validate(cfg.model_dump(exclude={"baseline"})) == cfg


# --------------------------------------------------------------------------------------------------
# Convergence figures


def test_path_profiles_match_trapezoid_ig_and_the_path(smooth_mlp: nn.Module) -> None:
    x, baseline = _seeded(3, 3, 6), torch.zeros(3, 6, dtype=DTYPE)
    target = torch.arange(3)
    f = _target_column(smooth_mlp)
    profiles = ig_path_profiles(f, x, baseline, target, max_steps=40, internal_batch_size=7)
    assert profiles.steps.tolist() == [3, 5, 9, 17, 33]
    assert profiles.outputs.shape == profiles.grad_magnitude.shape == (3, 33)
    with torch.no_grad():
        at_half = f(0.5 * x, target).numpy()
    assert np.allclose(profiles.outputs[:, 16], at_half, rtol=1e-12)
    for column, steps in enumerate(profiles.steps.tolist()):
        attr = integrated_gradients(f, x, baseline, target, n_steps=steps, rule="trapezoid")
        with torch.no_grad():
            gap = f(x, target) - f(baseline, target)
        expected = _rel_error(attr, gap).numpy()
        assert np.allclose(profiles.completeness_rel_error[:, column], expected, rtol=1e-9, atol=1e-15)
