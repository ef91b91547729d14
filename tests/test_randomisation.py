"""Model randomisation sanity check: the cascade, the similarity measures and the verdict."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import relu_cnn

from mlflow_xai import audit
from mlflow_xai.checks.randomisation import (
    RandomisationScores,
    RandomisedCascade,
    attribution_entropy,
    cascade_labels,
    cascade_layers,
    cascade_stages,
    similarities,
    ssim,
    stayed_similar,
    verdict_stage,
)
from mlflow_xai.config import load_config
from mlflow_xai.errors import ConfigError, ModelError
from mlflow_xai.report.faithfulness import randomisation_verdicts
from mlflow_xai.report.metric_names import metric_catalogue


class WithNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3), nn.GroupNorm(2, 4), nn.ReLU())
        self.scale = nn.Parameter(torch.arange(1.0, 5.0))  # a parameter of a module with children
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(torch.relu(self.bn(self.conv(x)))).mean(dim=(2, 3)) * self.scale
        return self.head(h)


# --- layers and stages -------------------------------------------------------------------------


def test_layers_run_top_down_and_normalisation_goes_with_the_layer_before_it():
    layers = cascade_layers(WithNorm())
    # Registration order: (the module itself: scale), conv, bn, block.0, block.1, head.
    assert layers == [["head"], ["block.0", "block.1"], ["conv", "bn"], [""]]


def test_stages_group_contiguous_layers_the_first_ones_taking_the_remainder():
    layers = [[f"l{i}"] for i in range(7)]
    assert cascade_stages(layers, 3) == [["l0", "l1", "l2"], ["l3", "l4"], ["l5", "l6"]]
    assert cascade_stages(layers, 8) == layers
    assert cascade_stages(layers, 7) == layers


def test_stage_labels_name_the_lowest_layer_randomised():
    model = relu_cnn()
    names = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert cascade_labels(model, 8) == names[::-1]  # 7 layers, one per stage
    assert cascade_labels(model, 2) == [names[3], names[0]]  # top 4 layers, then the bottom 3


def test_a_stage_is_labelled_by_its_lowest_layer_not_by_the_normalisation_with_it():
    assert cascade_labels(WithNorm(), 8) == ["head", "block.0", "conv", "(model)"]
    assert cascade_labels(WithNorm(), 2) == ["block.0", "(model)"]  # stages: head + block, conv + scale


@pytest.mark.parametrize(
    ("stages", "depth", "expected"),
    [(7, 0.5, 4), (4, 0.5, 2), (8, 0.5, 4), (5, 1.0, 5), (5, 0.01, 1), (1, 0.5, 1)],
)
def test_verdict_stage_is_the_first_stage_covering_the_depth(stages, depth, expected):
    assert verdict_stage(stages, depth) == expected


# --- the randomised copy -----------------------------------------------------------------------


def test_the_cascade_randomises_the_top_k_layers_at_stage_k_and_never_the_users_model():
    model = relu_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cascade = RandomisedCascade(model, seed=3)
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))][::-1]
    for k, randomised in enumerate(cascade.cascade(), start=1):
        assert randomised is not model
        for depth, name in enumerate(layers):
            trained = model.get_submodule(name).weight
            weight = randomised.get_submodule(name).weight
            if depth < k:
                assert not torch.equal(weight, trained)
                bound = 1 / math.sqrt(weight[0].numel())  # PyTorch's default init: U(-b, b)
                assert float(weight.detach().abs().max()) <= bound
            else:
                assert torch.equal(weight, trained)
    assert k == len(layers)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])  # bit-identical


def test_the_cascade_is_reproducible_under_a_seed_and_the_same_on_every_pass():
    model = relu_cnn()

    def final(seed: int) -> dict[str, torch.Tensor]:
        cascade = RandomisedCascade(model, seed=seed)
        *_, last = cascade.cascade()
        first = {k: v.clone() for k, v in last.state_dict().items()}
        *_, last = cascade.cascade()  # a second batch starts again from the trained weights
        assert all(torch.equal(first[k], v) for k, v in last.state_dict().items())
        return first

    a, b, c = final(0), final(0), final(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])


def test_a_layer_gets_its_own_reset_under_the_layer_seed_once_and_keeps_it():
    """Each layer's weights are its reset_parameters drawn from (seed, layer name), done once: at
    the last stage the top layer still holds the values of stage 1, and two layers of one shape
    get different draws."""
    from mlflow_xai.seeding import sample_seed

    model = relu_cnn()
    stages = [
        {k: v.clone() for k, v in c.state_dict().items()} for c in RandomisedCascade(model, seed=5).cascade()
    ]
    for name in ("16", "12", "10"):
        reference = copy.deepcopy(model.get_submodule(name))
        torch.manual_seed(sample_seed(5, 0, f"randomisation/{name}"))
        reference.reset_parameters()
        torch.testing.assert_close(stages[-1][f"{name}.weight"], reference.weight, rtol=0, atol=0)
    torch.testing.assert_close(stages[0]["16.weight"], stages[-1]["16.weight"], rtol=0, atol=0)
    assert stages[-1]["10.weight"].shape == stages[-1]["12.weight"].shape
    assert not torch.equal(stages[-1]["10.weight"], stages[-1]["12.weight"])
    # Called without options, the cascade runs as documented: 8 stages at most, seed 0.
    bare = [c.state_dict()["16.weight"].clone() for c in RandomisedCascade(model).cascade()]
    spelled = [
        c.state_dict()["16.weight"].clone() for c in RandomisedCascade(model, max_stages=8, seed=0).cascade()
    ]
    assert len(bare) == len(spelled) == 7
    torch.testing.assert_close(bare[-1], spelled[-1], rtol=0, atol=0)
    nine = RandomisedCascade(nn.Sequential(*[nn.Linear(2, 2) for _ in range(9)]))
    assert len(nine.stages) == 8


class Scale(nn.Module):
    """A parameter holder with no reset_parameters and no children (as in an exported graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.arange(1.0, 9.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


class Gated(nn.Module):
    """A module with reset_parameters, a child and a parameter of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(8, 8)
        self.gate = nn.Parameter(torch.arange(1.0, 9.0))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.gate


def test_a_shuffle_is_drawn_from_the_layer_seed():
    from mlflow_xai.seeding import sample_seed

    model = nn.Sequential(Scale(), nn.Linear(8, 2))
    *_, last = RandomisedCascade(model, seed=4).cascade()
    generator = torch.Generator().manual_seed(sample_seed(4, 0, "randomisation/0"))
    expected = model[0].w.detach()[torch.randperm(8, generator=generator)]
    torch.testing.assert_close(last[0].w.detach(), expected, rtol=0, atol=0)


def test_holders_without_reset_and_modules_with_children_have_their_own_entries_shuffled():
    for model, name in ((nn.Sequential(Scale(), nn.Linear(8, 2)), "0.w"), (Gated(), "gate")):
        trained = model.state_dict()[name].clone()
        *_, last = RandomisedCascade(model, seed=2).cascade()
        shuffled = last.state_dict()[name]
        assert not torch.equal(shuffled, trained)
        assert torch.equal(torch.sort(shuffled).values, torch.sort(trained).values)
    # The child of the module with children is a layer of its own, reset by its own rule.
    *_, last = RandomisedCascade(Gated(), seed=2).cascade()
    assert float(last.inner.weight.detach().abs().max()) <= 1 / math.sqrt(8)


def test_parameter_holders_without_reset_have_their_entries_shuffled():
    model = WithNorm()
    cascade = RandomisedCascade(model, seed=0)
    *_, copy = cascade.cascade()
    assert not torch.equal(copy.scale, model.scale)
    assert torch.equal(torch.sort(copy.scale).values, torch.sort(model.scale).values)
    # BatchNorm's reset: weight 1, bias 0, running statistics cleared.
    assert torch.equal(copy.bn.weight, torch.ones(4)) and torch.equal(copy.bn.running_var, torch.ones(4))


def test_a_model_without_parameters_is_refused_before_any_batch():
    model = nn.Sequential(nn.Flatten(), nn.Softmax(dim=1))
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    cfg = {"methods": {"saliency": {}}, "checks": {"randomisation": {}}}
    with pytest.raises(
        ModelError, match="cannot run: the model has no parameters: there is nothing to randomise$"
    ):
        audit(model, x, cfg)
    assert cascade_stages([], 8) == []


# --- similarity ---------------------------------------------------------------------------------


def test_similarity_of_a_map_with_itself_and_with_its_negation():
    a = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    same = similarities(a, a.clone())
    for measure in ("spearman", "spearman_abs", "top_k", "ssim"):
        np.testing.assert_allclose(same[measure].numpy(), 1.0, atol=1e-12)
    negated = similarities(a, -a)
    np.testing.assert_allclose(negated["spearman"].numpy(), -1.0, atol=1e-12)
    np.testing.assert_allclose(negated["spearman_abs"].numpy(), 1.0, atol=1e-12)
    assert "ssim" not in similarities(a.flatten(1), a.flatten(1))  # not an image


def test_ssim_is_the_mean_over_every_7x7_window_by_hand():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 2, 9, 8)), rng.normal(size=(2, 2, 9, 8))
    c1, c2 = 0.01**2, 0.03**2
    expected = []
    for i in range(2):
        x, y = np.abs(a[i]).sum(axis=0), np.abs(b[i]).sum(axis=0)
        x, y = x / x.max(), y / y.max()
        values = []
        for r in range(3):
            for c in range(2):
                u, v = x[r : r + 7, c : c + 7], y[r : r + 7, c : c + 7]
                mu, mv = u.mean(), v.mean()
                cov = ((u - mu) * (v - mv)).mean()
                values.append(
                    ((2 * mu * mv + c1) * (2 * cov + c2)) / ((mu**2 + mv**2 + c1) * (u.var() + v.var() + c2))
                )
        expected.append(np.mean(values))
    got = ssim(torch.from_numpy(a), torch.from_numpy(b))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_ssim_shrinks_its_window_to_a_small_image_and_judges_a_map_that_peaks_at_one():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(size=(1, 1, 5, 9)), rng.uniform(size=(1, 1, 5, 9))
    a = a / a.max()  # its largest value is exactly 1
    c1, c2 = 0.01**2, 0.03**2
    values = []
    x, y = a[0, 0], b[0, 0] / b.max()
    for c in range(5):  # 5x5 windows: the image is 5 pixels high
        u, v = x[:, c : c + 5], y[:, c : c + 5]
        mu, mv = u.mean(), v.mean()
        cov = ((u - mu) * (v - mv)).mean()
        values.append(
            ((2 * mu * mv + c1) * (2 * cov + c2)) / ((mu**2 + mv**2 + c1) * (u.var() + v.var() + c2))
        )
    np.testing.assert_allclose(
        ssim(torch.from_numpy(a), torch.from_numpy(b)).numpy(), [np.mean(values)], rtol=1e-12
    )
    np.testing.assert_allclose(
        ssim(torch.from_numpy(b), torch.from_numpy(a)).numpy(), [np.mean(values)], rtol=1e-12
    )
    wide = ssim(torch.from_numpy(a.transpose(0, 1, 3, 2)), torch.from_numpy(b.transpose(0, 1, 3, 2)))
    np.testing.assert_allclose(wide.numpy(), [np.mean(values)], rtol=1e-12)  # 9 x 5: the same windows


def test_ssim_against_the_formula_computed_by_hand():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(1, 3, 7, 7)), rng.normal(size=(1, 3, 7, 7))
    # One 7x7 window: SSIM is the formula on the whole channel-summed |map|, each scaled by its max.
    x, y = np.abs(a).sum(axis=1)[0], np.abs(b).sum(axis=1)[0]
    x, y = x / x.max(), y / y.max()
    mx, my = x.mean(), y.mean()
    vx, vy, cxy = x.var(), y.var(), ((x - mx) * (y - my)).mean()
    c1, c2 = 0.01**2, 0.03**2
    expected = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    got = ssim(torch.from_numpy(a), torch.from_numpy(b))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert torch.isnan(ssim(torch.from_numpy(a), torch.zeros(1, 3, 7, 7))).all()


def test_top_k_overlap_counts_shared_top_features():
    a = torch.tensor([[10.0, 9, 8, 7, 6, 5, 4, 3, 2, 1]])
    b = torch.tensor([[10.0, 1, 8, 2, 3, 4, 5, 6, 7, 9]])  # top 2: a {0, 1}, b {0, 9}
    assert similarities(a, b, top_k=0.2)["top_k"].item() == pytest.approx(0.5)


def test_entropy_per_sample_and_of_small_maps():
    maps = torch.tensor([[0.1, 0.1, 0.0, 0.0], [0.05, 0.05, 0.05, 0.05]])  # sums below 1
    np.testing.assert_allclose(attribution_entropy(maps).numpy(), [math.log(2), math.log(4)], rtol=1e-12)


def test_entropy_of_uniform_and_one_hot_maps():
    uniform, one_hot = torch.ones(1, 16), torch.zeros(1, 16)
    one_hot[0, 3] = -2.0
    assert attribution_entropy(uniform).item() == pytest.approx(math.log(16))
    assert attribution_entropy(one_hot).item() == 0.0
    assert torch.isnan(attribution_entropy(torch.zeros(1, 16))).all()


def test_stayed_similar_counts_leading_stages_at_or_above_the_threshold():
    assert stayed_similar([0.9, 0.5, 0.4, 0.8], 0.5) == 2
    assert stayed_similar([0.4, 0.9], 0.5) == 0
    assert stayed_similar([0.9, float("nan"), 0.9], 0.5) == 1
    assert stayed_similar([0.6, 0.7], 0.5) == 2


def test_scores_refuse_what_they_cannot_compare():
    with pytest.raises(
        ValueError, match="similarity must be one of spearman, spearman_abs, top_k, ssim, got 'x'"
    ):
        RandomisationScores(torch.ones(2, 4), similarity="x")
    with pytest.raises(
        ValueError, match=r"similarity 'ssim' compares images \(B, C, H, W\); maps are \(2, 4\)"
    ):
        RandomisationScores(torch.ones(2, 4), similarity="ssim")
    RandomisationScores(torch.ones(2, 1, 4, 4), similarity="ssim")  # images are fine
    with pytest.raises(ValueError, match="^the cascade has no stages$"):
        RandomisationScores(torch.ones(2, 4)).result()


def test_scores_defaults_ties_and_top_k():
    trained = torch.arange(1.0, 9.0).view(1, 8)
    half = torch.tensor([[1.0, 2, 3, 4, 8, 7, 6, 5]])  # spearman with trained: 0.7619...
    stages = [trained, half, trained.flip(1), trained.flip(1)]  # the verdict stage (2 of 4) is half

    def run(**options: float) -> dict[str, torch.Tensor]:
        scores = RandomisationScores(trained, **options)
        for maps in stages:
            scores.add(maps)
        return scores.result()

    bare, spelled = run(), run(depth=0.5, max_similarity=0.5, top_k=0.1)
    for key in bare:
        torch.testing.assert_close(bare[key], spelled[key], equal_nan=True)
    rho = float(bare["randomisation_similarity"])
    assert rho == pytest.approx(1 - 6 * 20 / (8 * 63))  # d = 0 0 0 0 3 1 -1 -3
    assert not bool(run(max_similarity=rho)["randomisation_passed"])  # equal is not below
    assert bool(run(max_similarity=rho + 1e-9)["randomisation_passed"])
    # Stage 2: the top 4 of 8 are the same positions, the top 1 is not (position 7 against 4).
    wide = run(top_k=0.5)["randomisation_cascade_top_k"]
    assert float(wide[0, 1]) == 1.0 and float(run()["randomisation_cascade_top_k"][0, 1]) == 0.0
    assert float(wide[0, 2]) == 0.0


def test_scores_take_the_verdict_at_the_depth_and_keep_every_stage():
    trained = torch.arange(1.0, 9.0).view(1, 8).repeat(2, 1)
    reverse = trained.flip(1)
    stages = [trained, trained * 2, reverse, reverse * 3]  # spearman 1, 1, -1, -1 for both samples
    scores = RandomisationScores(trained, depth=0.5, max_similarity=0.5)
    for maps in stages:
        scores.add(maps)
    out = scores.result()
    np.testing.assert_allclose(
        out["randomisation_cascade_spearman"].numpy(), [[1, 1, -1, -1]] * 2, atol=1e-12
    )
    np.testing.assert_allclose(out["randomisation_similarity"].numpy(), [1.0, 1.0])  # stage 2 of 4
    assert not out["randomisation_passed"].any()
    np.testing.assert_allclose(out["randomisation_final_similarity"].numpy(), [-1.0, -1.0])
    np.testing.assert_allclose(out["randomisation_entropy_rise"].numpy(), [1.0, 1.0])  # same |values|
    stages[-1] = torch.ones(2, 8) + torch.tensor([0.0, 0, 0, 0, 0, 0, 0, 1])  # the last stage differs
    last = RandomisationScores(trained, depth=0.5, max_similarity=0.5)
    for maps in stages:
        last.add(maps)
    expected = similarities(trained, stages[-1])["spearman"]
    torch.testing.assert_close(last.result()["randomisation_final_similarity"], expected)


# --- config -------------------------------------------------------------------------------------


def test_config_defaults_and_metric_names():
    cfg = load_config({"methods": {"saliency": {}}, "checks": {"randomisation": {}}})
    check = cfg.checks.randomisation
    assert (check.similarity, check.max_similarity, check.depth, check.max_stages, check.seed) == (
        "spearman",
        0.5,
        0.5,
        8,
        0,
    )
    names = metric_catalogue(cfg)
    for metric in (
        "randomisation_similarity_mean",
        "randomisation_passed_fraction",
        "randomisation_final_similarity_p95",
        "randomisation_entropy_rise_max",
        "randomisation_seconds",
    ):
        assert f"xai/saliency/{metric}" in names
    assert not any("cascade" in name for name in names)
    off = metric_catalogue(load_config({"methods": {"saliency": {}}}))
    assert not any("randomisation" in name for name in off)


@pytest.mark.parametrize(
    "bad", [{"similarity": "pearson"}, {"depth": 0}, {"max_similarity": 2}, {"max_stages": 0}, {"top_k": 0}]
)
def test_bad_options_are_refused(bad):
    with pytest.raises(ConfigError):
        load_config({"methods": {"saliency": {}}, "checks": {"randomisation": bad}})


def test_ssim_on_tabular_inputs_is_refused_before_any_compute():
    model = nn.Sequential(nn.Linear(6, 3))
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    cfg = {"methods": {"saliency": {}}, "checks": {"randomisation": {"similarity": "ssim"}}}
    with pytest.raises(ConfigError, match="ssim"):
        audit(model, x, cfg)


def test_verdict_sentences_name_the_stage_and_the_layer_it_stayed_alike_through():
    layers = ["head", "conv3", "conv2", "conv1"]
    cascades = {
        "gbp": np.array([[0.9, 0.8, 0.6, 0.2], [0.9, 0.8, 0.4, 0.2]]),  # stage means 0.9 0.8 0.5 0.2
        "ig": np.array([[0.1, 0.0, 0.0, 0.0], [np.nan, 0.0, 0.0, 0.0]]),
        "flat": np.full((2, 4), np.nan),
    }
    metrics = {
        "xai/gbp/randomisation_similarity_mean": 0.8,
        "xai/ig/randomisation_similarity_mean": 0.0,
        "xai/ig/randomisation_entropy_rise_mean": 1.25,
    }
    found = randomisation_verdicts(
        metrics, cascades, layers, measure="spearman", max_similarity=0.5, depth=0.5
    )
    assert found["gbp"][0] == "fail"
    assert "0.80 >= 0.5 after randomising the top 2 of 4 layer stages (down to conv3)" in found["gbp"][1]
    assert "stayed alike through layer conv2 (stage 3)" in found["gbp"][1]
    assert found["ig"][0] == "pass" and "stayed alike" not in found["ig"][1]
    assert "entropy rise on the fully random model 1.25x" in found["ig"][1]
    assert found["flat"][0] == "fail"  # nothing compared is never a pass
