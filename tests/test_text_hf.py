"""Hugging Face text classifiers: raw texts tokenized locally, and models logged with mlflow.transformers.

Everything is built here: a tokenizer from a generated vocabulary and a tiny BERT from a config with
random weights; nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlflow_xai import audit
from mlflow_xai.errors import ProbeError

transformers = pytest.importorskip("transformers")

WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *"the a film was good bad great awful very plot".split(),
]
TEXTS = ["the film was great", "a very bad plot", "awful <script>alert(1)</script> film", "good"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2, max_position_embeddings=32, initializer_range=0.5,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config).eval()


def test_raw_texts_are_tokenized_by_the_local_tokenizer_and_agree_with_token_ids(
    tmp_path, tokenizer_dir, bert
):
    np.savez(tmp_path / "texts.npz", texts=np.array(TEXTS), labels=np.array([1, 0, 0, 1]))
    cfg = {
        "methods": {"layer_integrated_gradients": {"n_steps": "auto"}},
        "probe": {"tokenizer": str(tokenizer_dir)},
    }
    report = audit(bert, str(tmp_path / "texts.npz"), cfg)
    probe = report.probe
    assert probe.tokens[0].tolist()[:6] == ["[CLS]", "the", "film", "was", "great", "[SEP]"]
    assert probe.token_ids["pad_token_id"] == 0 and probe.token_ids["mask_token_id"] == 4
    scores = report.methods["layer_integrated_gradients"]
    assert scores.completeness.rel_error.max() <= 0.01
    # [CLS]/[SEP] (the tokenizer's special tokens) and the padding score exactly 0.
    kept = np.isin(probe.inputs, [0, 1, 2, 3, 4]) | (probe.attention_mask == 0)
    assert np.all(scores.attributions[kept] == 0) and np.any(scores.attributions[~kept] != 0)
    # The same token attributions through the npz of token ids the tokenizer gave.
    np.savez(tmp_path / "ids.npz", input_ids=probe.inputs, attention_mask=probe.attention_mask)
    cfg_ids = {**cfg, "probe": {}, "text": {"special_token_ids": [0, 1, 2, 3, 4]}}
    by_ids = audit(bert, str(tmp_path / "ids.npz"), cfg_ids).methods["layer_integrated_gradients"]
    np.testing.assert_array_equal(by_ids.attributions, scores.attributions)


def test_a_missing_tokenizer_is_a_clear_error_never_a_download(tmp_path):
    np.savez(tmp_path / "texts.npz", texts=np.array(TEXTS))
    cfg = {"methods": {"layer_integrated_gradients": {}}, "probe": {"tokenizer": str(tmp_path / "nowhere")}}
    with pytest.raises(ProbeError, match="is not a folder.*nothing is downloaded"):
        audit(torch.nn.Linear(2, 2), str(tmp_path / "texts.npz"), cfg)
    with pytest.raises(ProbeError, match="needs a tokenizer"):
        audit(
            torch.nn.Linear(2, 2),
            str(tmp_path / "texts.npz"),
            {"methods": {"layer_integrated_gradients": {}}},
        )


def test_the_cli_audits_a_model_logged_with_mlflow_transformers_with_its_own_tokenizer(
    tracking_store, tmp_path, tokenizer_dir, bert, capsys
):
    import mlflow

    from mlflow_xai.cli.commands import main

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    with mlflow.start_run():
        info = mlflow.transformers.log_model(
            {"model": bert, "tokenizer": tokenizer}, name="model", task="text-classification",
            pip_requirements=["transformers"],
        )  # fmt: skip
    np.savez(tmp_path / "texts.npz", texts=np.array(TEXTS), labels=np.array([1, 0, 0, 1]))
    (tmp_path / "c.yaml").write_text(
        "methods: {layer_integrated_gradients: {n_steps: auto}}\n", encoding="utf-8"
    )
    code = main(
        ["audit", "--model-uri", info.model_uri, "--probe", str(tmp_path / "texts.npz"), "--config",
         str(tmp_path / "c.yaml"), "--output-dir", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().out
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in html and "<h2>Tokens</h2>" in html
    with np.load(tmp_path / "out" / "layer_integrated_gradients" / "masks.npz") as masks:
        assert masks["tokens"][0, 1] == "the"


def test_mlflow_evaluate_takes_a_dataframe_column_of_texts(tracking_store, tmp_path, tokenizer_dir, bert):
    import mlflow
    import pandas as pd

    with mlflow.start_run():
        uri = mlflow.pytorch.log_model(bert, name="model", serialization_format="pickle").model_uri
    config = {
        "methods": {"layer_integrated_gradients": {"n_steps": 16}},
        "probe": {"tokenizer": str(tokenizer_dir)},
        "artifacts": {"mask_dtype": "float32"},
    }
    with mlflow.start_run():
        result = mlflow.models.evaluate(
            uri,
            data=pd.DataFrame({"text": TEXTS, "label": [1, 0, 0, 1]}),
            targets="label",
            model_type="classifier",
            evaluators=["xai"],
            evaluator_config={"xai": config},
        )
    assert result.metrics["xai/probe/samples"] == 4.0
    # The same token attributions as the npz of raw texts gives through audit().
    np.savez(tmp_path / "texts.npz", texts=np.array(TEXTS), labels=np.array([1, 0, 0, 1]))
    direct = audit(bert, str(tmp_path / "texts.npz"), config).methods["layer_integrated_gradients"]
    with np.load(
        result.artifacts["xai/layer_integrated_gradients/masks.npz"].uri.removeprefix("file://")
    ) as m:
        np.testing.assert_array_equal(m["attributions"], direct.attributions)
    without = {key: value for key, value in config.items() if key != "probe"}
    with mlflow.start_run(), pytest.raises(Exception, match="probe.tokenizer"):
        mlflow.models.evaluate(
            uri, data=pd.DataFrame({"text": TEXTS, "label": [1, 0, 0, 1]}), targets="label",
            model_type="classifier", evaluators=["xai"], evaluator_config={"xai": without},
        )  # fmt: skip


def test_mlflow_evaluate_audits_a_transformers_pipeline_with_its_own_tokenizer(
    tracking_store, tokenizer_dir, bert
):
    import mlflow
    import pandas as pd

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    with mlflow.start_run():
        info = mlflow.transformers.log_model(
            {"model": bert, "tokenizer": tokenizer}, name="model", task="text-classification",
            pip_requirements=["transformers"],
        )  # fmt: skip
        result = mlflow.models.evaluate(
            info.model_uri,
            data=pd.DataFrame({"text": TEXTS, "label": [1, 0, 0, 1]}),
            targets="label",
            model_type="classifier",
            evaluators=["xai"],
            evaluator_config={"xai": {"methods": {"layer_integrated_gradients": {"n_steps": "auto"}}}},
        )
    assert result.metrics["xai/probe/samples"] == 4.0
    assert result.metrics["xai/layer_integrated_gradients/completeness_pass_fraction"] == 1.0
