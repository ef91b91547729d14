"""Adaptive IG against answers known on paper: the finest grid's trapezoid, exact answers meeting
zero tolerances, a path that looks flat at every first node, rank correlation with ties, and the
memory groups."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from mlflow_xai.attribution.adaptive import ENDPOINT_OFFSET, _Partition, adaptive_integrated_gradients
from mlflow_xai.checks.convergence import _average_ranks, spearman_rank_correlation
from mlflow_xai.config import CompletenessConfig, IntegratedGradientsConfig

DTYPE = torch.float64
WEIGHTS = (0.7, -1.3)


def _cubic_plus_linear(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # F(x) = 0.7 x0^3 - 1.3 x1: cubic in the path along x0, linear along x1.
    return WEIGHTS[0] * x[:, 0] ** 3 + WEIGHTS[1] * x[:, 1]


def _finest_trapezoid(x: list[float], finest: int) -> list[float]:
    """IG of _cubic_plus_linear from a zero baseline by the composite trapezoid on ``finest``
    equal intervals, its two ends evaluated ENDPOINT_OFFSET inside the path (plain Python floats)."""
    h = 1.0 / finest
    total = [0.0, 0.0]
    for j in range(finest + 1):
        alpha = min(max(j / finest, ENDPOINT_OFFSET), 1 - ENDPOINT_OFFSET)
        weight = h / 2 if j in (0, finest) else h
        # d/dx0 of 0.7 x0^3 at alpha x is 2.1 (alpha x0)^2; times (x - x') = x0.
        total[0] += weight * 3 * WEIGHTS[0] * (alpha * x[0]) ** 2 * x[0]
        total[1] += weight * WEIGHTS[1] * x[1]
    return total


def _with_zero_tolerances(x: torch.Tensor, min_steps: int, max_steps: int):
    """Adaptive IG of _cubic_plus_linear from a zero baseline, refining until both errors are 0."""
    return adaptive_integrated_gradients(
        _cubic_plus_linear,
        x,
        torch.zeros_like(x),
        torch.zeros(len(x), dtype=torch.long),
        completeness_tolerance=0.0,
        step_change_tolerance=0.0,
        min_steps=min_steps,
        max_steps=max_steps,
    )


@pytest.mark.parametrize(("min_steps", "max_steps"), [(3, 9), (5, 9), (9, 9), (5, 12), (17, 20)])
def test_unmet_tolerances_refine_to_the_trapezoid_on_the_finest_grid(min_steps: int, max_steps: int) -> None:
    # Tolerances of 0 are never met by a cubic path: every interval is halved until the partition is
    # the finest grid (8 or 16 intervals, the largest power of two with finest + 1 <= max_steps), so
    # the answer is the composite trapezoid there and each sample spent finest + 1 evaluations.
    finest = 16 if max_steps >= 17 else 8
    x = torch.tensor([[1.5, 2.0], [-0.8, 0.5]], dtype=DTYPE)
    result = _with_zero_tolerances(x, min_steps, max_steps)
    assert result.steps.tolist() == [finest + 1, finest + 1]
    assert result.steps.dtype == torch.int64
    assert result.converged.tolist() == [False, False]
    expected = torch.tensor([_finest_trapezoid(row, finest) for row in x.tolist()], dtype=DTYPE)
    torch.testing.assert_close(result.attributions, expected, rtol=1e-12, atol=1e-14)


def test_an_exact_answer_meets_tolerances_of_zero_at_the_first_check() -> None:
    # Along (0, 2) F is linear (x0 stays 0): both estimates are exact and equal, so a step change of
    # 0 and a completeness error of 0 meet tolerances of 0. Along (1.5, 2) they never do.
    x = torch.tensor([[0.0, 2.0], [1.5, 2.0]], dtype=DTYPE)
    result = _with_zero_tolerances(x, 5, 33)
    assert result.converged.tolist() == [True, False]
    assert result.steps.tolist() == [5, 33]
    assert result.attributions[0].tolist() == [0.0, WEIGHTS[1] * 2.0]
    assert float(result.step_change_rel_l2[0]) == 0.0 and float(result.completeness_rel_error[0]) == 0.0


def _bump(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # F(u) = u + 10 relu(u - 0.55) - 10 relu(u - 0.6): slope 1, but 11 on (0.55, 0.6).
    u = x[:, 0]
    return u + 10 * torch.relu(u - 0.55) - 10 * torch.relu(u - 0.6)


def test_a_path_flat_at_every_first_node_is_halved_everywhere_until_the_bump_shows() -> None:
    # From 0 to 1 with 2 intervals and their midpoints, the slope is 1 at every node (just inside
    # 0, 1/4, 1/2, 3/4, just inside 1): no interval shows a difference, yet the sum is 1 where
    # F(1) - F(0) = 1.5. Every splittable interval is halved until a node lands on the bump
    # (9/16 = 0.5625 after two rounds); from there the difference leads the refinement.
    x = torch.ones(1, 1, dtype=DTYPE)
    result = adaptive_integrated_gradients(
        _bump, x, torch.zeros_like(x), torch.zeros(1, dtype=torch.long), min_steps=5, max_steps=129
    )
    assert int(result.steps[0]) > 17
    # On the finest grid (1/128) each of the two jumps of 10 in the slope costs the trapezoid at most
    # h * 10 / 2 = 0.039; the integral itself is 1.5.
    assert abs(float(result.attributions.sum()) - 1.5) <= 2 * 10 / 2 / 128


def test_attributions_keep_the_input_dtype_and_are_stored_in_it() -> None:
    linear_weights = torch.tensor([0.25, -3.0, 1.0 / 3.0], dtype=DTYPE)
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=DTYPE)

    def linear(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return z @ linear_weights.to(z.dtype)

    for dtype, tolerance in ((torch.float64, 1e-15), (torch.float32, 1e-6)):
        result = adaptive_integrated_gradients(
            linear, x.to(dtype), torch.zeros(1, 3, dtype=dtype), torch.zeros(1, dtype=torch.long)
        )
        assert result.attributions.dtype == dtype and result.steps.dtype == torch.int64
        # Node values are kept in the input's dtype: in float64 the answer is exact to 1e-15.
        expected = (x * linear_weights).to(dtype)
        torch.testing.assert_close(result.attributions, expected, rtol=tolerance, atol=0.0)


def test_a_node_count_that_does_not_match_is_an_internal_error() -> None:
    partition = _Partition(torch.zeros(2, 3), finest=8)
    partition.add_nodes(torch.tensor([0, 1, 1, 0]), [torch.zeros(4, 3)])
    short = [torch.zeros(2, 3)]  # two rows for three samples
    with pytest.raises(RuntimeError, match="expected 3 node values, got 2$"):
        partition.add_nodes(torch.tensor([0, 1, 1]), short)


def test_a_float32_module_gets_float32_points() -> None:
    # The path's points are built in the input's dtype: a float32 layer refuses float64 inputs.
    torch.manual_seed(0)
    linear = torch.nn.Linear(3, 2)
    x = torch.tensor([[1.0, -2.0, 0.5]])
    result = adaptive_integrated_gradients(
        lambda z, t: linear(z).gather(1, t.view(-1, 1)).squeeze(1), x, torch.zeros_like(x), torch.tensor([1])
    )
    expected = x * linear.weight.detach()[1]
    torch.testing.assert_close(result.attributions, expected, rtol=1e-6, atol=1e-7)


def test_average_ranks_share_the_mean_position_of_a_tie() -> None:
    values = torch.tensor([[3.0, 1.0, 1.0, 0.0, 1.0], [5.0, 5.0, 2.0, 9.0, -1.0]])
    ranks = _average_ranks(values)
    assert ranks.tolist() == [[4.0, 2.0, 2.0, 0.0, 2.0], [2.5, 2.5, 1.0, 4.0, 0.0]]
    assert ranks.dtype == torch.float64


def _spearman_by_hand(a: list[float], b: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        return [sum(w < u for w in v) + (sum(w == u for w in v) - 1) / 2 for u in v]

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((p - ma) * (q - mb) for p, q in zip(ra, rb, strict=True))
    return cov / math.sqrt(sum((p - ma) ** 2 for p in ra) * sum((q - mb) ** 2 for q in rb))


def test_spearman_with_ties_equals_the_pearson_correlation_of_average_ranks() -> None:
    a = [[0.1, 0.4, 0.4, 2.0, -1.0, 0.0], [3.0, 2.0, 1.0, 0.0, -1.0, -2.0]]
    b = [[0.2, 0.2, 0.9, 1.0, -3.0, 0.5], [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0]]
    rho = spearman_rank_correlation(torch.tensor(a), torch.tensor(b))
    expected = [_spearman_by_hand(a[0], b[0]), -1.0]
    assert rho.tolist() == pytest.approx(expected, rel=1e-12)


def test_the_defaults_are_the_config_defaults() -> None:
    # Called from Python without arguments, adaptive IG behaves as `n_steps: auto` with the defaults.
    defaults = {
        name: p.default for name, p in inspect.signature(adaptive_integrated_gradients).parameters.items()
    }
    ig = IntegratedGradientsConfig()
    for name in ("completeness_tolerance", "step_change_tolerance", "min_steps", "max_steps"):
        assert defaults[name] == getattr(ig, name), name
    assert defaults["internal_batch_size"] == ig.points_per_pass(1)  # auto, for small inputs
    assert defaults["degenerate_floor"] == CompletenessConfig().degenerate_floor


class _RecordingOutput:
    """F(x) = sum of the x^3 terms, recording the batch size of every call made without gradients
    (the two calls at F(x) and F(x') that open each group)."""

    def __init__(self) -> None:
        self.opened: list[int] = []

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            self.opened.append(len(x))
        return (x**3).sum(dim=1)


@pytest.mark.parametrize(("per_group", "expected"), [(1, [1, 1, 1, 1, 1]), (2, [2, 2, 1])])
def test_samples_are_taken_in_groups_whose_nodes_fit_node_memory(per_group: int, expected: list[int]) -> None:
    x = torch.linspace(0.5, 2.0, 5 * 4, dtype=DTYPE).view(5, 4)
    f = _RecordingOutput()
    max_steps = 65
    node_bytes = max_steps * 4 * x.element_size()  # one sample's nodes if it used every step
    adaptive_integrated_gradients(
        f,
        x,
        torch.zeros_like(x),
        torch.zeros(5, dtype=torch.long),
        max_steps=max_steps,
        node_memory=per_group * node_bytes + node_bytes // 2,
    )
    assert f.opened[0::2] == expected and f.opened[1::2] == expected


@pytest.mark.parametrize(
    ("completeness_tolerance", "step_change_tolerance"),
    [(0.005, 0.3), (0.05, 0.003)],  # completeness decides the steps, then the step change does
)
def test_every_setting_reaches_every_group(
    completeness_tolerance: float, step_change_tolerance: float
) -> None:
    # Samples taken one group at a time refine exactly as they would together, with every
    # non-default setting passed on to each group (with the defaults the steps would differ).
    x = torch.tensor([[3.0, 1.0], [0.5, 1.0], [7.0, 0.5], [2.5, -1.0]], dtype=DTYPE)
    target = torch.zeros(4, dtype=torch.long)

    def kinked(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.relu(z[:, 0] - 1.0) * 2.0 + z[:, 1]

    settings = {
        "completeness_tolerance": completeness_tolerance,
        "step_change_tolerance": step_change_tolerance,
        "min_steps": 5,
        "max_steps": 129,
        "internal_batch_size": 3,
    }
    whole = adaptive_integrated_gradients(kinked, x, torch.zeros_like(x), target, **settings)
    one_by_one = adaptive_integrated_gradients(
        kinked, x, torch.zeros_like(x), target, node_memory=129 * 2 * 8, **settings
    )
    assert whole.steps.tolist()[1] == 5  # linear along its path: done at the first check
    assert one_by_one.steps.tolist() == whole.steps.tolist()
    assert one_by_one.converged.tolist() == whole.converged.tolist()
    torch.testing.assert_close(one_by_one.attributions, whole.attributions, rtol=0, atol=0)


def test_the_degenerate_floor_reaches_every_group() -> None:
    # A floor above every gap makes every baseline degenerate: no completeness error is reported,
    # whether the samples are taken together or one at a time.
    x = torch.tensor([[1.0, 0.5], [0.2, 2.0], [1.5, -1.0]], dtype=DTYPE)
    target = torch.zeros(3, dtype=torch.long)
    for node_memory in (2 << 30, 65 * 2 * 8):
        result = adaptive_integrated_gradients(
            _cubic_plus_linear,
            x,
            torch.zeros_like(x),
            target,
            degenerate_floor=100.0,
            max_steps=65,
            node_memory=node_memory,
        )
        assert torch.isnan(result.completeness_rel_error).all()
        assert result.converged.all()
