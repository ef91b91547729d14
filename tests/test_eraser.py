"""Comprehensiveness and sufficiency of token rankings (ERASER), against answers on paper.

Kept apart from ``test_text.py``: ``make mutation`` judges ``checks/eraser.py`` by these tests, which
run in a second or two.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from text_models import CLS, PAD, VOCAB, Bag, _contributions, _ids, _lig

from mlflow_xai import audit
from mlflow_xai.errors import ConfigError


@pytest.fixture(scope="module")
def bag() -> Bag:
    torch.manual_seed(0)
    return Bag().double()


def test_comprehensiveness_and_sufficiency_of_a_linear_bag_by_hand(bag):
    """Replacing tokens by a zero embedding removes exactly their contributions c_t, so for the
    ranking by c: comprehensiveness = mean over bins of the top tokens' sum, sufficiency = mean of
    the rest's sum (the special token never moves)."""
    from mlflow_xai.checks.eraser import rationale_sizes

    ids = _ids(n=4, length=11)
    cfg = {
        "methods": {"layer_integrated_gradients": {"baseline": "zero"}},
        "checks": {"eraser": {"baseline": "zero", "bins": [10, 20, 50]}},
        "target": 1,
        "text": {"special_token_ids": [CLS]},
    }
    report = audit(bag, ids, cfg)
    extras = report.methods["layer_integrated_gradients"].extras
    c = _contributions(bag, ids, 1)
    for i in range(4):
        ranked = sorted(range(1, 11), key=lambda j: (-c[i, j], j))  # position 0 is [CLS]
        sizes = rationale_sizes(10, [10, 20, 50])
        assert sizes == [1, 2, 5]
        comp = np.mean([c[i, ranked[:k]].sum() for k in sizes])
        suff = np.mean([c[i, ranked[k:]].sum() for k in sizes])
        assert extras["comprehensiveness"][i] == pytest.approx(comp, abs=1e-9)
        assert extras["sufficiency"][i] == pytest.approx(suff, abs=1e-9)
    margin = extras["comprehensiveness"] - extras["comprehensiveness_random"]
    np.testing.assert_allclose(extras["comprehensiveness_margin"], margin)
    assert report.metrics()["xai/layer_integrated_gradients/eraser_seconds"] > 0


def test_the_true_ranking_beats_its_reverse_and_random_on_a_planted_keyword():
    """A bag model that only reads the keyword: the ranking that puts it first is comprehensive and
    sufficient; its reverse is neither; random rankings fall between."""
    from mlflow_xai.checks.eraser import comprehensiveness_sufficiency

    keyword = 7
    ids = torch.as_tensor(_ids(n=8, length=12, seed=5))
    ids[ids == keyword] = keyword + 1
    ids[:, 4] = keyword  # once in every sample
    weight = torch.zeros(VOCAB, dtype=torch.float64)
    weight[keyword] = 1.0

    def kept_output(keep: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return (weight[ids[rows]] * keep).sum(dim=1)  # the keyword's presence

    rankable = ids != CLS
    true = weight[ids].clone()
    found = comprehensiveness_sufficiency(
        kept_output, true, rankable, range(8), bins=[10, 50], random_draws=8
    )
    reverse = comprehensiveness_sufficiency(
        kept_output, -true, rankable, range(8), bins=[10, 50], random_draws=8
    )
    assert torch.all(found["comprehensiveness"] == 1.0) and torch.all(found["sufficiency"] == 0.0)
    assert torch.all(reverse["comprehensiveness"] == 0.0) and torch.all(reverse["sufficiency"] == 1.0)
    assert torch.all(found["comprehensiveness_margin"] > 0) and torch.all(found["sufficiency_margin"] > 0)
    assert torch.all(reverse["comprehensiveness_margin"] < 0) and torch.all(reverse["sufficiency_margin"] < 0)


def test_deletion_shifts_the_kept_tokens_left_and_pads_the_end(bag):
    """With the mask-aware bag, deleting tokens averages over the kept ones only: the output is
    w . mean(E[kept]) + b, computed by hand."""
    ids = _ids(n=3, length=6)
    cfg = {
        "methods": {"layer_integrated_gradients": {"baseline": "pad"}},
        "checks": {"eraser": {"removal": "delete", "bins": [50], "random_draws": 1}},
        "target": 0,
        "text": {"pad_token_id": PAD, "special_token_ids": [CLS]},
    }
    report = audit(bag, ids, cfg)
    scores = report.methods["layer_integrated_gradients"].attributions.astype(np.float64)
    E = bag.emb.weight.detach().numpy()
    w, b = bag.head.weight.detach().numpy()[0], float(bag.head.bias.detach()[0])
    full = E[ids].mean(axis=1) @ w + b
    for i in range(3):
        ranked = sorted(range(1, 6), key=lambda j: (-scores[i, j], j))
        top = ranked[:3]  # ceil(50% of 5)
        rest = [j for j in range(6) if j not in top]  # [CLS] stays
        without = E[ids[i, rest]].mean(axis=0) @ w + b
        alone = E[ids[i, [0, *top]]].mean(axis=0) @ w + b
        extras = report.methods["layer_integrated_gradients"].extras
        assert extras["comprehensiveness"][i] == pytest.approx(full[i] - without, abs=1e-9)
        assert extras["sufficiency"][i] == pytest.approx(full[i] - alone, abs=1e-9)


def test_eraser_is_refused_on_images_and_without_its_token():
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    with pytest.raises(ConfigError, match="checks.eraser ranks tokens"):
        audit(nn.Linear(6, 2), x, {"methods": {"saliency": {}}, "checks": {"eraser": {}}})
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="text.mask_token_id"):
        audit(Bag().double(), _ids(), {**_lig(baseline="zero"), "checks": {"eraser": {}}})


def _keyword_case(n: int = 5):
    """A model that reads one keyword; ids with the keyword once per sample and [CLS] first."""
    keyword = 7
    ids = torch.as_tensor(_ids(n=n, length=10, seed=9))
    ids[ids == keyword] = keyword + 1
    ids[:, 3] = keyword
    weight = torch.rand(VOCAB, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return ids, weight, _reader(ids, weight)


def _reader(ids: torch.Tensor, weight: torch.Tensor):
    """The kept output of a batch ``ids``: a sum of per-token weights over the tokens kept."""

    def kept_output(keep: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return (weight[ids[rows]] * keep).sum(dim=1)

    return kept_output


def test_pass_size_random_draws_and_batching_change_nothing():
    from mlflow_xai.checks.eraser import comprehensiveness_sufficiency

    ids, weight, f = _keyword_case()
    scores, rankable = weight[ids], ids != CLS
    bare = comprehensiveness_sufficiency(f, scores, rankable, range(5))
    spelled = comprehensiveness_sufficiency(
        f, scores, rankable, range(5), bins=(1, 5, 10, 20, 50), random_draws=3, seed=0, batch=3
    )
    for key, value in bare.items():
        torch.testing.assert_close(value, spelled[key], rtol=0, atol=1e-12)
    # A sample's random rankings depend on its position only: alone, it gets the same control.
    alone = comprehensiveness_sufficiency(_reader(ids[2:3], weight), scores[2:3], rankable[2:3], [2])
    torch.testing.assert_close(alone["comprehensiveness_random"], bare["comprehensiveness_random"][2:3])
    torch.testing.assert_close(alone["sufficiency_random"], bare["sufficiency_random"][2:3])
    torch.testing.assert_close(bare["sufficiency_margin"], bare["sufficiency_random"] - bare["sufficiency"])
    other = comprehensiveness_sufficiency(f, scores, rankable, range(5), seed=1)
    assert not torch.equal(other["comprehensiveness_random"], bare["comprehensiveness_random"])


def test_random_controls_by_hand_from_the_seeded_orders():
    from mlflow_xai.checks.eraser import comprehensiveness_sufficiency, random_positions, rationale_sizes

    ids, weight, f = _keyword_case(n=2)
    rankable = ids != CLS
    found = comprehensiveness_sufficiency(
        f, weight[ids], rankable, [4, 9], bins=[20, 50], random_draws=2, seed=3
    )
    for i in range(2):
        total = float(weight[ids[i]].sum())
        comp, suff = [], []
        for draw in range(2):
            order = random_positions(rankable[i : i + 1], [[4, 9][i]], 3, draw)[0]
            for size in rationale_sizes(9, [20, 50]):
                top = order[:size]
                comp.append(float(weight[ids[i, top]].sum()))
                rest = [j for j in range(10) if j not in set(top.tolist()) and j != 0]
                suff.append(float(weight[ids[i, rest]].sum()))
        assert float(found["comprehensiveness_random"][i]) == pytest.approx(np.mean(comp), abs=1e-12)
        assert float(found["sufficiency_random"][i]) == pytest.approx(np.mean(suff), abs=1e-12)
        assert total > 0


def test_a_sample_with_nothing_to_rank_is_nan_alone():
    from mlflow_xai.checks.eraser import ERASER_QUANTITIES, comprehensiveness_sufficiency

    ids, weight, f = _keyword_case(n=3)
    rankable = ids != CLS
    rankable[1] = False
    found = comprehensiveness_sufficiency(f, weight[ids], rankable, range(3), bins=[50])
    for key in ERASER_QUANTITIES:
        assert torch.isnan(found[key][1]) and torch.isfinite(found[key][[0, 2]]).all(), key


def test_rationale_sizes_round_up_and_stay_within_the_tokens():
    from mlflow_xai.checks.eraser import rationale_sizes

    assert rationale_sizes(201, [50]) == [101]
    assert rationale_sizes(10, [1, 5, 10, 20, 50, 100]) == [1, 1, 1, 2, 5, 10]
    assert rationale_sizes(3, [0.1]) == [1]
