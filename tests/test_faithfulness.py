"""Deletion and insertion against answers worked out on paper.

On a linear model F(x) = w . x + b with a zero baseline, taking away feature i lowers F by exactly
a_i = x_i w_i (its IG attribution). Deletion in the order of a removes the largest terms first, so
after the first m features the normalised output is 1 - (a_1 + ... + a_m) / sum(a); insertion is its
complement. A random order removes each feature with equal chance: its expected curve is the straight
line 1 - k / steps, area 1/2.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mlflow_xai
from mlflow_xai.checks.faithfulness import (
    DELETION_INSERTION_QUANTITIES,
    deletion_insertion,
    feature_groups,
)
from mlflow_xai.config import load_config
from mlflow_xai.engine.batch import BatchResult, MethodBatch
from mlflow_xai.errors import ConfigError
from mlflow_xai.report import metric_catalogue

D, STEPS = 20, 10  # 2 features a step


def _linear(w: torch.Tensor, b: float = 0.3):
    def f(points: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return points.reshape(len(points), -1) @ w + b

    return f


def _trapezoid(curve: list[float]) -> float:
    return (sum(curve) - (curve[0] + curve[-1]) / 2) / (len(curve) - 1)


def _by_hand(a: np.ndarray, per_step: int) -> tuple[float, float]:
    """Deletion and insertion areas of the ranking by a (descending, ties by index), in float64."""
    order = sorted(range(len(a)), key=lambda i: (-a[i], i))
    total = float(a.sum())
    removed = [sum(a[order[: k * per_step]]) / total for k in range(STEPS + 1)]
    return _trapezoid([1 - r for r in removed]), _trapezoid(removed)


@pytest.fixture
def linear_case():
    rng = np.random.default_rng(7)
    w = torch.tensor(rng.normal(size=D))
    x = torch.tensor(rng.normal(size=(3, D)))
    return w, x


def test_linear_model_curves_have_their_closed_form(linear_case):
    w, x = linear_case
    attributions = x * w  # IG of a linear model from a zero baseline
    found = deletion_insertion(
        _linear(w),
        x,
        torch.zeros_like(x),
        torch.zeros(3, dtype=torch.long),
        attributions,
        [0, 1, 2],
        steps=STEPS,
        random_draws=1,
    )
    for i in range(3):
        deletion, insertion = _by_hand(attributions[i].numpy(), D // STEPS)
        assert found["deletion_auc"][i].item() == pytest.approx(deletion, abs=1e-12)
        assert found["insertion_auc"][i].item() == pytest.approx(insertion, abs=1e-12)
        # The curve itself: the share of F(x) - F(0) carried by the features still in place.
        a = attributions[i].numpy()
        order = sorted(range(D), key=lambda j: (-a[j], j))
        removed = [a[order[: k * (D // STEPS)]].sum() / a.sum() for k in range(STEPS + 1)]
        np.testing.assert_allclose(found["deletion_curve"][i].numpy(), 1 - np.array(removed), atol=1e-12)
        np.testing.assert_allclose(found["insertion_curve"][i].numpy(), removed, atol=1e-12)
    margins = found["deletion_random_auc"] - found["deletion_auc"]
    torch.testing.assert_close(found["deletion_margin"], margins)
    torch.testing.assert_close(
        found["insertion_margin"], found["insertion_auc"] - found["insertion_random_auc"]
    )


def test_random_rankings_average_to_the_straight_line():
    """Positive contributions keep every normalised curve in [0, 1]; over 400 seeded rankings the
    mean area is 1/2 within two standard errors (at most 0.5 / sqrt(400) each)."""
    rng = np.random.default_rng(3)
    w = torch.tensor(rng.uniform(0.1, 1.0, size=D))
    x = torch.tensor(rng.uniform(0.1, 1.0, size=(2, D)))
    found = deletion_insertion(
        _linear(w, 0.0),
        x,
        torch.zeros_like(x),
        torch.zeros(2, dtype=torch.long),
        x * w,
        [0, 1],
        steps=STEPS,
        random_draws=400,
    )
    assert found["deletion_random_auc"].numpy() == pytest.approx([0.5, 0.5], abs=0.05)
    straight = 1 - np.arange(STEPS + 1) / STEPS  # the expected random deletion curve, point by point
    np.testing.assert_allclose(found["deletion_random_curve"].numpy(), [straight, straight], atol=0.06)
    np.testing.assert_allclose(found["insertion_random_curve"].numpy(), [1 - straight] * 2, atol=0.06)
    assert found["insertion_random_auc"].numpy() == pytest.approx([0.5, 0.5], abs=0.05)
    torch.testing.assert_close(
        found["deletion_random_auc"] + found["insertion_random_auc"], torch.ones(2, dtype=torch.float64)
    )


def test_the_true_contributions_beat_random_and_their_reverse():
    rng = np.random.default_rng(5)
    w = torch.tensor(rng.uniform(0.1, 1.0, size=D))
    x = torch.tensor(rng.uniform(0.1, 1.0, size=(4, D)))
    args = (_linear(w), x, torch.zeros_like(x), torch.zeros(4, dtype=torch.long))
    true = deletion_insertion(*args, x * w, [0, 1, 2, 3], steps=STEPS, random_draws=8)
    reverse = deletion_insertion(*args, -(x * w), [0, 1, 2, 3], steps=STEPS, random_draws=8)
    assert (true["deletion_auc"] < true["deletion_random_auc"]).all()
    assert (true["deletion_random_auc"] < reverse["deletion_auc"]).all()
    assert (true["insertion_auc"] > true["insertion_random_auc"]).all()
    assert (true["insertion_random_auc"] > reverse["insertion_auc"]).all()
    assert (true["deletion_margin"] > 0).all() and (reverse["deletion_margin"] < 0).all()


def test_a_degenerate_gap_has_no_area():
    w = torch.ones(D, dtype=torch.float64)
    x = torch.zeros(2, D, dtype=torch.float64)
    x[1, :3] = 1.0
    found = deletion_insertion(
        _linear(w), x, torch.zeros_like(x), torch.zeros(2, dtype=torch.long), x * w, [0, 1], steps=STEPS
    )
    for key in DELETION_INSERTION_QUANTITIES:
        assert torch.isnan(found[key][0]) and torch.isfinite(found[key][1]), key
    for key in ("deletion_curve", "insertion_curve", "deletion_random_curve", "insertion_random_curve"):
        assert torch.isnan(found[key][0]).all() and torch.isfinite(found[key][1]).all(), key


def test_feature_groups():
    groups, count = feature_groups((2, 2, 3), "pixels")
    assert count == 6 and groups.tolist() == [0, 1, 2, 3, 4, 5] * 2
    groups, count = feature_groups((1, 3, 3), "patches", patch_size=2)
    assert count == 4 and groups.tolist() == [0, 0, 1, 0, 0, 1, 2, 2, 3]
    groups, count = feature_groups((5,), "elements")
    assert count == 5 and groups.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="groups the pixels of images"):
        feature_groups((5,), "pixels")


def test_pixels_are_ranked_by_their_channel_sum():
    """Two channels, four pixels: pixel 3 holds the largest single value but the smallest sum."""
    w = torch.ones(8, dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0, 3.0, 9.0, 4.0, 3.0, 2.0, -8.5]], dtype=torch.float64).view(1, 2, 2, 2)
    f = _linear(w, 0.0)
    found = deletion_insertion(
        f, x, torch.zeros_like(x), torch.zeros(1, dtype=torch.long), x, [0], steps=4, features="pixels"
    )
    sums = [5.0, 5.0, 5.0, 0.5]  # per pixel; ties keep the lower index: order 0, 1, 2, 3
    total = sum(sums)
    removed = [0.0, 5.0, 10.0, 15.0, 15.5]
    assert found["deletion_auc"].item() == pytest.approx(
        _trapezoid([1 - r / total for r in removed]), abs=1e-12
    )


def _float64_linear_model(features: int = 12, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(features, classes).double()


CHECK = {"steps": 4, "random_draws": 2}


def test_through_the_audit_ig_on_a_linear_model_matches_the_closed_form():
    model = _float64_linear_model()
    x = np.random.default_rng(1).normal(size=(5, 12))
    config = {
        "methods": {"integrated_gradients": {"n_steps": 8}},
        "checks": {"deletion_insertion": CHECK},
        "artifacts": {"sheet_samples": 0, "mask_dtype": "float32"},
    }
    report = mlflow_xai.audit(model, x, config)
    result = report.methods["integrated_gradients"]
    w = model.weight.detach().numpy()
    for i in range(5):
        a = x[i] * w[report.targets[i]]
        order = sorted(range(12), key=lambda j: (-a[j], j))
        removed = [sum(a[order[: k * 3]]) / a.sum() for k in range(5)]
        expected = _trapezoid([1 - r for r in removed])
        assert result.extras["deletion_auc"][i] == pytest.approx(expected, abs=1e-9)
    metrics = report.metrics()
    assert metrics["xai/integrated_gradients/deletion_auc_mean"] == pytest.approx(
        float(np.mean(result.extras["deletion_auc"]))
    )
    assert metrics["xai/integrated_gradients/deletion_insertion_seconds"] > 0


def test_results_do_not_depend_on_the_batch_size():
    """The random rankings are seeded by each sample's position: another batching changes the numbers
    only by the rounding of batched matmuls (a different ranking would move them by ~0.1)."""
    model = _float64_linear_model()
    x = np.random.default_rng(2).normal(size=(7, 12))
    base = {"methods": {"saliency": {"abs": False}}, "checks": {"deletion_insertion": CHECK}}
    base["artifacts"] = {"sheet_samples": 0}
    one = mlflow_xai.audit(model, x, {**base, "batch_size": 2}).methods["saliency"].extras
    other = mlflow_xai.audit(model, x, {**base, "batch_size": 5}).methods["saliency"].extras
    for key in DELETION_INSERTION_QUANTITIES:
        np.testing.assert_allclose(one[key], other[key], rtol=1e-12, atol=1e-12)


def test_config_and_metric_names():
    with pytest.raises(ConfigError, match="patch_size applies to features 'patches' only"):
        load_config({"checks": {"deletion_insertion": {"patch_size": 2}}})
    with pytest.raises(ConfigError, match="steps"):
        load_config({"checks": {"deletion_insertion": {"steps": 1}}})
    on = metric_catalogue(load_config({"checks": {"deletion_insertion": {}}}))
    off = metric_catalogue(load_config({}))
    for name in ("deletion_margin_mean", "insertion_auc_p95", "deletion_insertion_seconds"):
        assert f"xai/occlusion/{name}" in on and f"xai/occlusion/{name}" not in off


def test_check_seconds_travel_with_a_batch_result():
    m = MethodBatch(values=np.zeros((3, 2)), seconds=1.5, checks_seconds={"deletion_insertion": 0.25})
    result = BatchResult(
        4, np.array(["a", "b", "c"]), np.zeros(3, int), np.zeros((3, 1), int), {"saliency": m}
    )
    for per_sample in (False, True):
        back = BatchResult.from_columns(result.columns(per_sample=per_sample)).methods["saliency"]
        assert back.seconds == 1.5 and back.checks_seconds == {"deletion_insertion": 0.25}


# --- infidelity and max-sensitivity (Yeh et al. 2019) ----------------------------------------------

ROBUST = {"infidelity": {"n_perturb_samples": 16}, "sensitivity": {"n_perturb_samples": 8, "radius": 0.05}}


def _robust_audit(method: dict, batch_size: int = 5):
    model = _float64_linear_model()
    x = np.random.default_rng(4).normal(size=(5, 12))
    config = {
        "batch_size": batch_size,
        "methods": method,
        "checks": ROBUST,
        "artifacts": {"sheet_samples": 0, "mask_dtype": "float32"},
    }
    return model, x, mlflow_xai.audit(model, x, config)


def test_a_gradient_of_a_linear_model_is_exactly_faithful_and_stable():
    """F = w . x + b: the gradient w predicts F(x) - F(x - I) = w . I for every I (infidelity 0) and
    does not move when x does (max-sensitivity 0)."""
    _, _, report = _robust_audit({"saliency": {"abs": False}})
    extras = report.methods["saliency"].extras
    assert np.all(extras["infidelity"] < 1e-25)
    assert np.all(extras["sensitivity_max"] == 0.0)


def test_ig_infidelity_and_sensitivity_match_the_hand_computed_draws():
    """IG of a linear model from zero is a = x * w. With the perturbations the check draws for a
    sample (its seeded generator, as Captum's own functions draw them):
    infidelity = mean over I of (I . a - w . I)^2, and max-sensitivity = max over d of
    ||d * w|| / ||x * w||."""
    from mlflow_xai.attribution.methods.base import seeded
    from mlflow_xai.seeding import sample_seed

    model, x, report = _robust_audit({"integrated_gradients": {"n_steps": 8}}, batch_size=2)
    extras = report.methods["integrated_gradients"].extras
    weights = model.weight.detach()
    for i in range(5):
        w = weights[report.targets[i]]
        xi = torch.from_numpy(x[i])
        with seeded(sample_seed(0, i, "infidelity"), torch.device("cpu")):
            noise = torch.randn(16, 12, dtype=torch.float64) * 0.1
        expected = float(((noise @ (xi * w - w)) ** 2).mean())
        assert extras["infidelity"][i] == pytest.approx(expected, rel=1e-9)
        with seeded(sample_seed(0, i, "sensitivity"), torch.device("cpu")):
            d = torch.FloatTensor(8, 12).uniform_(-0.05, 0.05).double()
        moved = (xi + d) * w - xi * w
        expected = float((moved.norm(dim=1) / (xi * w).norm()).max())
        assert extras["sensitivity_max"][i] == pytest.approx(expected, rel=1e-5)


def test_infidelity_is_captums_own():
    """The check's number for a sample is what ``captum.metrics.infidelity`` gives when called
    directly with the same perturbation function and seed."""
    from captum.metrics import infidelity

    from mlflow_xai.attribution.methods.base import seeded
    from mlflow_xai.seeding import sample_seed

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    x = np.random.default_rng(6).normal(size=(3, 6))
    config = {
        "methods": {"integrated_gradients": {"n_steps": 16}},
        "checks": {"infidelity": {"n_perturb_samples": 12, "noise_scale": 0.2, "seed": 9}},
        "artifacts": {"sheet_samples": 0, "mask_dtype": "float32"},
    }
    report = mlflow_xai.audit(model, x, config)
    result = report.methods["integrated_gradients"]

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.2
        return noise, inputs - noise

    for i in range(3):
        xi = torch.from_numpy(x[i : i + 1])
        a = torch.from_numpy(np.asarray(result.attributions[i : i + 1], dtype=np.float64))
        with seeded(sample_seed(9, i, "infidelity"), torch.device("cpu")), torch.no_grad():
            direct = infidelity(model, perturb, xi, a, target=int(report.targets[i]), n_perturb_samples=12)
        # The stored masks are float32; the check saw the float64 attributions (rounding ~1e-8).
        assert result.extras["infidelity"][i] == pytest.approx(float(direct), rel=1e-6)
    assert "xai/integrated_gradients/infidelity_seconds" in report.metrics()


def test_pixel_groups_on_tabular_inputs_are_refused_before_any_batch(monkeypatch):
    from mlflow_xai.engine.batch import BatchAttributor

    def no_batch(*args, **kwargs):
        raise AssertionError("a batch ran")

    monkeypatch.setattr(BatchAttributor, "run", no_batch)
    config = {"checks": {"deletion_insertion": {"features": "pixels"}}}
    with pytest.raises(
        ConfigError, match=r"groups the pixels of images \(C, H, W\).*\[5\]; use features: elements"
    ):
        mlflow_xai.audit(torch.nn.Linear(5, 2), np.zeros((3, 5), np.float32), config)


def test_plain_language_verdicts():
    from mlflow_xai.report.faithfulness import faithfulness_sentences

    metrics = {
        "xai/ig/deletion_auc_mean": 0.2,  # 0.8 above the curve against 0.5: 1.6x
        "xai/ig/deletion_random_auc_mean": 0.5,
        "xai/ig/insertion_auc_mean": 0.8,  # against 0.4: 2x
        "xai/ig/insertion_random_auc_mean": 0.4,
        "xai/gbp/deletion_auc_mean": 0.6,
        "xai/gbp/deletion_random_auc_mean": 0.5,
        "xai/gbp/insertion_auc_mean": 0.3,
        "xai/gbp/insertion_random_auc_mean": 0.4,
        "xai/saliency/seconds": 1.0,
    }
    found = faithfulness_sentences(metrics, ["ig", "gbp", "saliency"])
    assert set(found) == {"ig", "gbp"}
    assert found["ig"] == (
        "deleting features in this order drops the output 1.6x faster than a random order (area above the "
        "curve 0.80 against 0.50); inserting them raises it 2.0x faster than a random order (area 0.80 "
        "against 0.40)"
    )
    assert "drops the output no faster than a random order" in found["gbp"]
    assert "raises it no faster than a random order" in found["gbp"]


def test_report_html_says_it_in_words(tmp_path):
    from mlflow_xai.artifacts import write_artifacts

    model = _float64_linear_model()
    x = np.random.default_rng(8).normal(size=(4, 12))
    config = {"methods": {"integrated_gradients": {"n_steps": 8}}, "artifacts": {"sheet_samples": 0}}
    plain = write_artifacts(mlflow_xai.audit(model, x, config), tmp_path / "off")
    assert "<h2>Faithfulness</h2>" not in (plain / "report.html").read_text()
    report = mlflow_xai.audit(model, x, {**config, "checks": {"deletion_insertion": CHECK}})
    html = (write_artifacts(report, tmp_path / "on") / "report.html").read_text()
    assert "<h2>Faithfulness</h2>" in html
    assert "deleting features in this order drops the output" in html


def test_steps_that_do_not_divide_the_features_move_floor_k_m_over_steps():
    """7 features in 3 steps move 0, 2, 4 and 7 of them (floor(7k/3)), not 7k/3 rounded up."""
    from mlflow_xai.checks.faithfulness import curve_counts

    assert curve_counts(7, 3) == [0, 2, 4, 7]
    w = torch.ones(7, dtype=torch.float64)
    x = torch.tensor([[7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]], dtype=torch.float64)
    found = deletion_insertion(
        _linear(w, 0.0), x, torch.zeros_like(x), torch.zeros(1, dtype=torch.long), x, [0], steps=3
    )
    total = 28.0
    assert found["deletion_auc"].item() == pytest.approx(
        _trapezoid([1, 1 - 13 / total, 1 - 22 / total, 0]), abs=1e-12
    )


def test_two_steps_is_the_least_a_curve_takes():
    w = torch.ones(4, dtype=torch.float64)
    x = torch.tensor([[4.0, 3.0, 2.0, 1.0]], dtype=torch.float64)
    args = (_linear(w, 0.0), x, torch.zeros_like(x), torch.zeros(1, dtype=torch.long), x, [0])
    found = deletion_insertion(*args, steps=2)
    assert found["deletion_auc"].item() == pytest.approx(_trapezoid([1, 1 - 7 / 10, 0]), abs=1e-12)
    with pytest.raises(
        ValueError, match=r"steps must be >= 2 \(a curve needs a point between its ends\), got 1"
    ):
        deletion_insertion(*args, steps=1)
    with pytest.raises(ValueError, match="features must be one of elements, pixels, patches, got 'rows'"):
        feature_groups((3, 4, 4), "rows")


def test_patch_size_reaches_the_groups():
    """A 4x4 image in 2x2 patches: four groups ranked by their sums (the default 4x4 patch would be one)."""
    w = torch.ones(16, dtype=torch.float64)
    x = torch.arange(16, dtype=torch.float64).view(1, 1, 4, 4)
    patches = [float(x[0, 0, r : r + 2, c : c + 2].sum()) for r in (0, 2) for c in (0, 2)]  # 10, 18, 42, 50
    removed = [0.0, 50.0, 92.0, 110.0, 120.0]
    found = deletion_insertion(
        _linear(w, 0.0), x, torch.zeros_like(x), torch.zeros(1, dtype=torch.long), x, [0],
        steps=4, features="patches", patch_size=2,
    )  # fmt: skip
    assert sorted(patches, reverse=True) == [50.0, 42.0, 18.0, 10.0]
    assert found["deletion_auc"].item() == pytest.approx(
        _trapezoid([1 - r / 120 for r in removed]), abs=1e-12
    )


def test_a_gap_at_the_floor_is_degenerate():
    w = torch.ones(4, dtype=torch.float64)
    x = torch.tensor([[0.25, 0.25, 0.0, 0.0], [0.5, 0.25, 0.0, 0.0]], dtype=torch.float64)  # gaps 0.5, 0.75
    found = deletion_insertion(
        _linear(w, 0.0), x, torch.zeros_like(x), torch.zeros(2, dtype=torch.long), x, [0, 1],
        steps=2, degenerate_floor=0.5,
    )  # fmt: skip
    assert torch.isnan(found["deletion_auc"][0]) and torch.isfinite(found["deletion_auc"][1])


def test_passes_of_any_size_give_the_same_curves(linear_case):
    w, x = linear_case
    args = (_linear(w), x, torch.zeros_like(x), torch.zeros(3, dtype=torch.long), x * w, [0, 1, 2])
    one = deletion_insertion(*args, steps=STEPS, batch=1000)
    small = deletion_insertion(*args, steps=STEPS, batch=5)
    for key in DELETION_INSERTION_QUANTITIES:
        torch.testing.assert_close(one[key], small[key], rtol=0, atol=1e-12)


def test_the_functions_defaults_are_the_configs():
    import inspect

    from mlflow_xai.config.sections import DeletionInsertionConfig

    defaults = DeletionInsertionConfig()
    params = inspect.signature(deletion_insertion).parameters
    for name, config_name in [
        ("steps", "steps"), ("features", "features"), ("patch_size", "patch_size"),
        ("random_draws", "random_draws"), ("seed", "seed"), ("batch", "internal_batch_size"),
        ("removal", "removal"), ("noise", "noise"),
    ]:  # fmt: skip
        assert params[name].default == getattr(defaults, config_name), name
    assert inspect.signature(feature_groups).parameters["patch_size"].default == defaults.patch_size


def test_called_without_options_it_runs_as_the_config_defaults_say():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    w = torch.randn(64, dtype=torch.float64)
    args = (_linear(w), x, torch.zeros_like(x), torch.zeros(2, dtype=torch.long), torch.randn_like(x), [3, 4])
    bare = deletion_insertion(*args, features="patches")
    spelled = deletion_insertion(*args, features="patches", steps=10, patch_size=4, random_draws=3, seed=0)
    for key in DELETION_INSERTION_QUANTITIES:
        torch.testing.assert_close(bare[key], spelled[key], rtol=0, atol=0)
    groups, count = feature_groups((1, 8, 8), "patches")
    assert count == 4 and torch.equal(groups, feature_groups((1, 8, 8), "patches", 4)[0])


@pytest.mark.parametrize(
    "check",
    [
        {},
        {"features": "pixels"},
        {"features": "patches", "patch_size": 2},
        {"baseline": "blur"},
        {"removal": "noisy_linear", "noise": 0.05},
    ],
)
def test_a_dumped_config_loads_back_to_the_same_config(check):
    import yaml

    from mlflow_xai.config.loading import dump_config

    cfg = load_config(
        {"methods": {"saliency": {}}, "checks": {"deletion_insertion": check, "randomisation": {}}}
    )
    assert load_config(yaml.safe_load(dump_config(cfg))) == cfg


# --- ROAD's noisy linear imputation -----------------------------------------------------------------

_WEIGHTS = np.array([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])


def _neighbour_mean(plane: np.ndarray, y: int, x: int) -> float:
    """The weighted mean of a pixel's neighbours inside the image, in float64 by hand."""
    total = weight = 0.0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if 0 <= y + dy < plane.shape[0] and 0 <= x + dx < plane.shape[1]:
                total += _WEIGHTS[dy + 1, dx + 1] * plane[y + dy, x + dx]
                weight += _WEIGHTS[dy + 1, dx + 1]
    return total / weight


def test_every_imputed_value_is_the_weighted_mean_of_its_neighbours():
    from mlflow_xai.checks.faithfulness import linear_imputation

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 7, generator=g, dtype=torch.float64)
    removed = torch.rand(2, 3, 9, 7, generator=g) < 0.6
    removed[0, 1, 2:7, 1:6] = True  # a hole of 25 pixels as well
    out = linear_imputation(x, removed, tolerance=1e-12).numpy()
    for i, c, y, col in zip(*np.nonzero(removed.numpy()), strict=True):
        assert out[i, c, y, col] == pytest.approx(_neighbour_mean(out[i, c], y, col), abs=1e-9)
    np.testing.assert_array_equal(out[~removed.numpy()], x.numpy()[~removed.numpy()])


def test_imputation_known_answers_a_ramp_and_a_single_kept_pixel():
    from mlflow_xai.checks.faithfulness import linear_imputation

    rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(10.0), indexing="ij")
    ramp = (0.5 * rows - 0.25 * cols + 1).double().view(1, 1, 8, 10)
    inside = torch.zeros(1, 1, 8, 10, dtype=torch.bool)
    inside[..., 2:6, 3:8] = True  # away from the border, a symmetric mean reproduces a plane
    out = linear_imputation(ramp.clone().masked_fill(inside, 7.0), inside, tolerance=1e-12)
    torch.testing.assert_close(out, ramp, rtol=0, atol=1e-9)
    one = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    one[0, 0, 4, 0] = False  # one pixel kept: the only solution is that value everywhere
    values = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    values[0, 0, 4, 0] = 3.0
    torch.testing.assert_close(linear_imputation(values, one, tolerance=1e-12), torch.full_like(values, 3.0))


def test_noisy_linear_curves_use_the_imputation_plus_seeded_noise():
    from mlflow_xai.checks.faithfulness import linear_imputation, noisy_linear_imputer

    g = torch.Generator().manual_seed(1)
    points = torch.rand(2, 1, 6, 6, generator=g, dtype=torch.float64)
    out_of_place = torch.rand(2, 1, 6, 6, generator=g) < 0.5
    clean = noisy_linear_imputer([4, 9], noise=0.0, seed=3)(
        points, out_of_place, torch.tensor([0, 1]), torch.tensor([2, 2])
    )
    torch.testing.assert_close(clean, linear_imputation(points, out_of_place))
    noisy = noisy_linear_imputer([4, 9], noise=0.5, seed=3)(
        points, out_of_place, torch.tensor([0, 1]), torch.tensor([2, 2])
    )
    gap = (noisy - clean).numpy()
    assert np.all(gap[~out_of_place.numpy()] == 0)  # kept values are never noised
    assert np.std(gap[out_of_place.numpy()]) == pytest.approx(0.5, rel=0.35)
    # The draws depend on (seed, position, step), not on the batch: sample 1 alone gets the same.
    alone = noisy_linear_imputer([9], noise=0.5, seed=3)(
        points[1:], out_of_place[1:], torch.tensor([0]), torch.tensor([2])
    )
    torch.testing.assert_close(alone, noisy[1:])


def test_noisy_linear_deletion_on_a_linear_model_is_batch_invariant_and_ends_at_the_baseline():
    torch.manual_seed(0)
    x = torch.rand(3, 2, 6, 6, dtype=torch.float64)
    w = torch.randn(72, dtype=torch.float64)
    args = (_linear(w), x, torch.zeros_like(x), torch.zeros(3, dtype=torch.long), x * w.view(2, 6, 6))
    whole = deletion_insertion(*args, [0, 1, 2], steps=4, removal="noisy_linear", random_draws=2)
    for i in range(3):
        one = deletion_insertion(
            _linear(w), x[i : i + 1], torch.zeros_like(x[i : i + 1]), torch.zeros(1, dtype=torch.long),
            (x * w.view(2, 6, 6))[i : i + 1], [i], steps=4, removal="noisy_linear", random_draws=2,
        )  # fmt: skip
        for key in DELETION_INSERTION_QUANTITIES:
            torch.testing.assert_close(one[key], whole[key][i : i + 1])
    plain = deletion_insertion(*args, [0, 1, 2], steps=4, random_draws=2)
    assert not torch.allclose(plain["deletion_curve"][:, 1:-1], whole["deletion_curve"][:, 1:-1])
    torch.testing.assert_close(whole["deletion_curve"][:, -1], torch.zeros(3, dtype=torch.float64))


def test_noisy_linear_is_refused_on_non_images_and_noise_without_it():
    with pytest.raises(ConfigError, match="noise applies to removal 'noisy_linear' only"):
        load_config({"checks": {"deletion_insertion": {"noise": 0.1}}})
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    cfg = {"methods": {"saliency": {}}, "checks": {"deletion_insertion": {"removal": "noisy_linear"}}}
    with pytest.raises(ConfigError, match="noisy_linear"):
        mlflow_xai.audit(torch.nn.Linear(6, 2), x, cfg)
