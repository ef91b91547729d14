"""Text probes: token ids explained through the embedding layer, against answers known on paper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from text_models import CLASSES, CLS, HIDDEN, PAD, VOCAB, Bag, _contributions, _ids, _lig

from mlflow_xai import audit
from mlflow_xai.artifacts.write import write_artifacts
from mlflow_xai.attribution.methods import registered
from mlflow_xai.errors import ConfigError, ModelError, ProbeError
from mlflow_xai.probe.probe_set import ProbeSet, load_npz


class Recurrent(nn.Module):
    """A nonlinear text model: embeddings, a GRU, the last hidden state, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, HIDDEN)
        self.gru = nn.GRU(HIDDEN, 8, batch_first=True)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.emb(ids))
        return self.head(torch.tanh(out[:, -1]))


@pytest.fixture(scope="module")
def bag() -> Bag:
    torch.manual_seed(0)
    return Bag().double()


@pytest.mark.parametrize(
    "steps",
    [
        {"n_steps": 2, "rule": "trapezoid"},
        {"n_steps": 5, "rule": "left"},
        {"n_steps": 16},
        {"n_steps": "auto"},
    ],
)
def test_embedding_bag_ig_per_token_is_its_share_of_the_linear_output(bag, steps):
    """Zero-embedding baseline, no special token named: IG of token t is (E[t] . w) / L, exactly."""
    ids = _ids()
    cfg = {**_lig(baseline="zero", **steps), "target": 1}
    report = audit(bag, ids, cfg)
    E, w = bag.emb.weight.detach().numpy(), bag.head.weight.detach().numpy()[1]
    expected = (E[ids] @ w) / ids.shape[1]
    np.testing.assert_allclose(report.methods["layer_integrated_gradients"].attributions, expected, atol=1e-6)
    assert report.metrics()["xai/layer_integrated_gradients/completeness_rel_error_max"] < 1e-9


def test_a_pad_baseline_keeps_special_tokens_and_padding(bag):
    """Each non-special real token moves from E[pad] to E[t]: (E[t] - E[pad]) . w / n_real; the
    special token and padding are kept in the baseline and score exactly 0."""
    ids = _ids()
    mask = np.ones_like(ids)
    mask[2, 4:] = 0
    ids[2, 4:] = PAD
    probe = ProbeSet(ids, attention_mask=mask)
    cfg = {**_lig(baseline="pad"), "target": 2, "text": {"pad_token_id": PAD, "special_token_ids": [CLS]}}
    scores = audit(bag, probe, cfg).methods["layer_integrated_gradients"].attributions
    E, w = bag.emb.weight.detach().numpy(), bag.head.weight.detach().numpy()[2]
    real = mask.sum(axis=1, keepdims=True)
    expected = ((E[ids] - E[PAD]) @ w) / real
    expected[ids == CLS] = 0.0
    expected[mask == 0] = 0.0
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_completeness_at_the_layer_on_a_nonlinear_model_and_batching_changes_nothing():
    torch.manual_seed(1)
    model = Recurrent().double()
    ids = _ids(n=5, length=9, seed=3)
    tight = audit(model, ids, {**_lig(baseline="zero", n_steps=64, internal_batch_size=512), "batch_size": 5})
    # Small passes mix samples inside a pass (each point carries its row); batches of 2 split the probe.
    mixed = audit(model, ids, {**_lig(baseline="zero", n_steps=64, internal_batch_size=7), "batch_size": 2})
    a = tight.methods["layer_integrated_gradients"]
    np.testing.assert_allclose(
        a.attributions, mixed.methods["layer_integrated_gradients"].attributions, atol=1e-10
    )
    assert a.completeness.rel_error.max() < 1e-3
    # Against Captum's LayerIntegratedGradients called directly, same rule and steps. Captum's
    # baseline is in token space: a copy of the model whose PAD embedding is zero gives it the
    # zero-embedding baseline.
    from captum.attr import LayerIntegratedGradients

    copy = Recurrent().double()
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        copy.emb.weight[PAD] = 0.0
    x = torch.as_tensor(ids)
    ref = LayerIntegratedGradients(copy, copy.emb).attribute(
        x, baselines=torch.full_like(x, PAD), target=torch.as_tensor(tight.targets), n_steps=64,
        method="gausslegendre",
    )  # fmt: skip
    np.testing.assert_allclose(a.attributions, ref.sum(dim=-1).detach().numpy(), atol=1e-8)


def test_a_text_probe_from_npz_with_tokens(tmp_path, bag):
    ids = _ids()
    mask = np.ones_like(ids)
    mask[0, -2:] = 0
    tokens = np.array([[f"w{t}" for t in row] for row in ids], dtype=object).astype(str)
    path = tmp_path / "probe.npz"
    np.savez(path, input_ids=ids, attention_mask=mask, labels=np.arange(6) % 3, tokens=tokens)
    probe = load_npz(path)
    assert probe.is_text and probe.input_shape == (7,)
    np.testing.assert_array_equal(probe.attention_mask, mask)
    assert probe.tokens[0, 1] == f"w{ids[0, 1]}"
    report = audit(bag, str(path), _lig(baseline="zero"))
    assert report.metrics()["xai/probe/samples"] == 6.0
    assert "xai/probe/accuracy" in report.metrics()


def test_artifacts_hold_the_scores_beside_the_tokens_and_escape_them(tmp_path, bag):
    ids = _ids()
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    tokens = np.array([[f"w{t}" for t in row] for row in ids], dtype=object)
    tokens[0, 3] = "<script>alert(1)</script>"
    tokens[:, 0] = "[CLS]"
    probe = ProbeSet(ids, attention_mask=mask, tokens=tokens.astype(str))
    report = audit(bag, probe, {**_lig(baseline="zero"), "text": {"special_token_ids": [CLS]}})
    folder = write_artifacts(report, tmp_path / "xai")
    with np.load(folder / "layer_integrated_gradients" / "masks.npz") as masks:
        assert masks["attributions"].shape == (6, 7)
        np.testing.assert_array_equal(masks["input_ids"], ids)
        np.testing.assert_array_equal(masks["attention_mask"], mask)
        assert masks["tokens"][0, 3] == "<script>alert(1)</script>"
    assert (folder / "layer_integrated_gradients" / "tokens.png").stat().st_size > 1000
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<span class="tok special">[CLS]</span>' in html
    assert html.count("Worst completeness:") == 1  # the one method with a completeness check
    rows = report.per_sample_rows()
    listed = rows[1]["layer_integrated_gradients/top_tokens"]
    assert "[CLS]" not in listed  # special tokens are never ranked
    assert f"w{ids[1, 6]}" not in listed.split(" (")[0]  # nor padding
    scores = report.methods["layer_integrated_gradients"].attributions[0]
    best = 1 + int(np.argmax(scores[1:]))
    assert listed is not None and rows[0]["layer_integrated_gradients/top_tokens"].startswith(
        str(tokens[0, best])
    )


def test_integer_token_ids_never_get_image_advice(bag):
    ids = _ids()
    with pytest.raises(ConfigError, match="token ids .*layer_integrated_gradients"):
        audit(bag, ids, {"methods": {"integrated_gradients": {}}})


def test_layer_ig_on_an_image_probe_is_refused():
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    with pytest.raises(ConfigError, match="not a text probe"):
        audit(nn.Linear(6, 2), x, {"methods": {"layer_integrated_gradients": {}}})


def test_a_baseline_token_nobody_names_is_refused(bag):
    with pytest.raises(ConfigError, match="text.pad_token_id"):
        audit(bag, _ids(), {"methods": {"layer_integrated_gradients": {"baseline": "pad"}}})


def test_token_ids_outside_the_vocabulary_are_refused(bag):
    ids = _ids()
    ids[2, 3] = VOCAB + 5
    with pytest.raises(ProbeError, match="out of the embedding's vocabulary"):
        audit(bag, ids, _lig(baseline="zero"))


def test_perturbation_checks_are_refused_on_text(bag):
    with pytest.raises(ConfigError, match="do not apply to a text probe"):
        audit(bag, _ids(), {**_lig(baseline="zero"), "checks": {"infidelity": {}}})


def test_two_embeddings_need_the_layer_named():
    class Two(Bag):
        def __init__(self) -> None:
            super().__init__()
            self.positions = nn.Embedding(16, HIDDEN)

    model = Two().double()
    with pytest.raises(ModelError, match="embedding_layer"):
        audit(model, _ids(), _lig(baseline="zero"))
    report = audit(model, _ids(), {**_lig(baseline="zero"), "text": {"embedding_layer": "emb"}})
    assert report.methods["layer_integrated_gradients"].attributions.shape == (6, 7)
    with pytest.raises(ModelError, match="is not an nn.Embedding"):
        audit(model, _ids(), {**_lig(baseline="zero"), "text": {"embedding_layer": "head"}})


def test_a_tiny_bert_built_from_a_config_is_complete_at_its_embedding_layer(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        num_labels=2, max_position_embeddings=16, initializer_range=0.5, pad_token_id=PAD,
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config).eval()
    ids = np.random.default_rng(4).integers(5, 40, size=(4, 10))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    mask = np.ones_like(ids)
    ids[1, 6:], mask[1, 6:], ids[1, 5] = PAD, 0, 3
    np.savez(tmp_path / "probe.npz", input_ids=ids, attention_mask=mask)
    cfg = {**_lig(n_steps="auto"), "text": {"special_token_ids": [2, 3]}}
    report = audit(model, str(tmp_path / "probe.npz"), cfg)
    result = report.methods["layer_integrated_gradients"]
    assert not result.completeness.degenerate.any()
    assert result.completeness.rel_error.max() <= 0.01
    # The [CLS]/[SEP] tokens and the padding are kept in the baseline (PAD from the model's config).
    assert np.all(result.attributions[ids == 2] == 0) and np.all(result.attributions[mask == 0] == 0)
    same = audit(model, ProbeSet(ids, attention_mask=mask), cfg).methods["layer_integrated_gradients"]
    np.testing.assert_array_equal(same.attributions, result.attributions)


def test_token_occlusion_of_an_embedding_bag_is_each_tokens_share(bag):
    """Setting token t to a zero embedding removes (E[t] . w) / L from the linear output; the
    special token is never occluded."""
    ids = _ids()
    cfg = {
        "methods": {"token_occlusion": {"baseline": "zero", "internal_batch_size": 5}},
        "artifacts": {"mask_dtype": "float32"},
        "target": 0,
        "text": {"special_token_ids": [CLS]},
    }
    scores = audit(bag, ids, cfg).methods["token_occlusion"].attributions
    E, w = bag.emb.weight.detach().numpy(), bag.head.weight.detach().numpy()[0]
    expected = (E[ids] @ w) / ids.shape[1]
    expected[ids == CLS] = 0.0
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_drift_over_token_rankings_leaves_special_tokens_and_padding_out():
    from mlflow_xai.checks.drift import attribution_drift

    a = np.array([[0.0, 3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0, 9.0]])
    b = np.array([[5.0, 3.0, 2.0, 1.0, -7.0], [0.0, 1.0, 2.0, 3.0, -9.0]])
    rankable = np.array([[False, True, True, True, False], [True, True, True, True, False]])
    found = attribution_drift(a, b, rankable=rankable, top_fraction=0.34)
    # Only the rankable tokens: the same order in both samples (the kept ones differ wildly).
    np.testing.assert_allclose(found["drift_rank_correlation"], [1.0, 1.0])
    np.testing.assert_allclose(found["drift_topk_overlap"], [1.0, 1.0])
    plain = attribution_drift(a, b, top_fraction=0.34)
    assert plain["drift_rank_correlation"][0] < 1.0


def test_the_cli_audits_a_logged_text_model_against_a_champion(tracking_store, tmp_path, capsys):
    import mlflow

    from mlflow_xai.cli.commands import main

    torch.manual_seed(0)
    candidate, champion = Bag().double(), Bag().double()
    with mlflow.start_run():
        uris = [
            mlflow.pytorch.log_model(
                m, name=name, serialization_format="pickle", pip_requirements=["torch"]
            ).model_uri
            for m, name in ((candidate, "candidate"), (champion, "champion"))
        ]
    ids = _ids()
    mask = np.ones_like(ids)
    mask[3, 5:], ids[3, 5:] = 0, PAD
    np.savez(tmp_path / "probe.npz", input_ids=ids, attention_mask=mask, labels=np.arange(6) % 3)
    (tmp_path / "text.yaml").write_text(
        "methods: {layer_integrated_gradients: {n_steps: auto}, token_occlusion: {}}\n"
        "checks: {eraser: {bins: [20, 50]}}\n"
        "text: {pad_token_id: 0, mask_token_id: 2, special_token_ids: [1]}\n",
        encoding="utf-8",
    )
    code = main(
        ["audit", "--model-uri", uris[0], "--probe", str(tmp_path / "probe.npz"), "--config",
         str(tmp_path / "text.yaml"), "--baseline-model-uri", uris[1], "--output-dir", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().out
    (run,) = [r for r in mlflow.search_runs(output_format="list") if "xai.gate" in r.data.tags]
    metrics = run.data.metrics
    for name in ("layer_integrated_gradients", "token_occlusion"):
        assert f"xai/{name}/drift_rank_correlation_median" in metrics
        assert f"xai/{name}/comprehensiveness_margin_mean" in metrics
        assert (tmp_path / "out" / name / "tokens.png").is_file()
    assert metrics["xai/layer_integrated_gradients/completeness_pass_fraction"] == 1.0


def test_an_exported_text_model_is_refused_clearly(bag):
    ids = torch.as_tensor(_ids())
    exported = torch.export.export(
        bag,
        (ids[:2], torch.ones_like(ids[:2])),
        dynamic_shapes=({0: torch.export.Dim("b")}, {0: torch.export.Dim("b")}),
    ).module()
    with pytest.raises(ModelError, match='serialization_format="pickle"'):
        audit(exported, _ids(), _lig(baseline="zero"))


@pytest.mark.parametrize(
    "method",
    [
        {"token_kernel_shap": {"baseline": "zero", "n_samples": 200}},
        {"token_lime": {"baseline": "zero", "n_samples": 200, "interpretable_model": "linear_regression"}},
    ],
)
def test_kernel_shap_and_lime_over_tokens_recover_a_linear_models_shares(bag, method):
    """The output is additive over tokens, so the fitted linear surrogate is exact: token t's value
    is (E[t] . w) / L; the special token is never switched and scores 0."""
    ids = _ids(n=3, length=6)
    cfg = {
        "methods": method,
        "target": 2,
        "text": {"special_token_ids": [CLS]},
        "artifacts": {"mask_dtype": "float32"},
    }
    (name,) = method
    scores = audit(bag, ids, cfg).methods[name].attributions
    expected = _contributions(bag, ids, 2)
    expected[ids == CLS] = 0.0
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_layer_gradient_shap_of_a_linear_bag_is_exact_without_noise_and_batch_free_with_it(bag):
    """The gradient is constant (w / L on every token), so without noise every draw gives
    (E[t] - E[x't]) . w / L; with noise the draws depend on each sample's position only."""
    ids = _ids()
    base = {"target": 1, "text": {"special_token_ids": [CLS]}, "artifacts": {"mask_dtype": "float32"}}
    exact = audit(
        bag, ids, {**base, "methods": {"layer_gradient_shap": {"baseline": "zero", "n_samples": 3}}}
    )
    expected = _contributions(bag, ids, 1)
    expected[ids == CLS] = 0.0
    np.testing.assert_allclose(exact.methods["layer_gradient_shap"].attributions, expected, atol=1e-6)
    noisy = {
        "layer_gradient_shap": {"baseline": "zero", "n_samples": 8, "stdevs": 0.3, "internal_batch_size": 5}
    }
    whole = audit(bag, ids, {**base, "methods": noisy, "batch_size": 6}).methods["layer_gradient_shap"]
    split = audit(bag, ids, {**base, "methods": noisy, "batch_size": 4}).methods["layer_gradient_shap"]
    np.testing.assert_array_equal(whole.attributions, split.attributions)
    assert not np.allclose(whole.attributions, expected, atol=1e-3)  # the noise moved the scores
    assert np.all(whole.attributions[ids == CLS] == 0)  # special tokens are never noised


TEXT_METHODS = sorted(name for name, method in registered().items() if method.for_text)


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_every_method_over_tokens_gives_one_finite_score_per_token_and_leaves_kept_tokens_at_zero(bag, name):
    ids = _ids()
    mask = np.ones_like(ids)
    mask[2, 5:], ids[2, 5:] = 0, PAD
    params = {"baseline": "zero"} | ({"n_samples": 16} if name in ("token_kernel_shap", "token_lime") else {})
    cfg = {"methods": {name: params}, "text": {"special_token_ids": [CLS]}, "batch_size": 4}
    scores = audit(bag, ProbeSet(ids, attention_mask=mask), cfg).methods[name].attributions
    assert scores.shape == ids.shape and np.isfinite(scores).all()
    assert np.all(scores[(ids == CLS) | (mask == 0)] == 0) and np.any(scores != 0)
    with pytest.raises(ConfigError, match="not a text probe"):
        audit(nn.Linear(6, 2), np.zeros((2, 6), dtype=np.float32), {"methods": {name: params}})


class Segments(Bag):
    """The bag model with BERT-style segment embeddings added to the tokens'."""

    def __init__(self) -> None:
        super().__init__()
        self.segments = nn.Embedding(2, HIDDEN)

    def forward(self, ids, attention_mask=None, token_type_ids=None):
        e = self.emb(ids) + (0 if token_type_ids is None else self.segments(token_type_ids))
        m = attention_mask.unsqueeze(-1).to(e.dtype)
        return self.head((e * m).sum(dim=1) / m.sum(dim=1))


def test_token_type_ids_reach_the_model_and_stay_fixed(tmp_path):
    torch.manual_seed(0)
    model = Segments().double()
    with torch.no_grad():
        model.segments.weight.mul_(20.0)  # segments that decide the prediction
    ids = _ids()
    types = np.zeros_like(ids)
    types[::2, 2:] = 1
    np.savez(tmp_path / "p.npz", input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=types)
    cfg = {**_lig(baseline="zero"), "target": 0, "text": {"embedding_layer": "emb"}}
    report = audit(model, str(tmp_path / "p.npz"), cfg)
    mask = torch.ones(ids.shape)
    with torch.no_grad():
        with_types = model(torch.as_tensor(ids), mask, torch.as_tensor(types)).argmax(dim=1).numpy()
        without = model(torch.as_tensor(ids), mask).argmax(dim=1).numpy()
    np.testing.assert_array_equal(report.predictions, with_types)
    assert not np.array_equal(with_types, without)
    # The segments are held fixed along the path: the gap from a zero-token baseline is the
    # tokens' share, (E[ids] . w) / L summed, and the scores add up to it.
    result = report.methods["layer_integrated_gradients"]
    E, w = model.emb.weight.detach().numpy(), model.head.weight.detach().numpy()[0]
    np.testing.assert_allclose(result.completeness.output_gap, (E[ids] @ w).sum(axis=1) / 7, atol=1e-9)
    np.testing.assert_allclose(result.attributions.sum(axis=1), result.completeness.output_gap, atol=1e-6)
