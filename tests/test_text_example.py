"""examples/text_classifier.py: the planted keyword carries the decisions the audit explains."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mlflow_xai import audit
from mlflow_xai.probe.probe_set import ProbeSet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import text_classifier as example  # noqa: E402


def test_the_keyword_ranks_first_in_every_positive_prediction():
    model = example.train(epochs=5)
    ids, mask, labels = example.sentences(32, seed=1)
    tokens = np.array(example.WORDS)[ids]
    probe = ProbeSet(ids, labels, attention_mask=mask, tokens=tokens)
    cfg = {
        "methods": {"layer_integrated_gradients": {"baseline": "pad", "n_steps": "auto"}},
        "text": {"pad_token_id": example.PAD, "special_token_ids": [example.CLS]},
    }
    report = audit(model, probe, cfg)
    assert report.metrics()["xai/probe/accuracy"] >= 0.9
    rows = report.per_sample_rows()
    positive = [row for row in rows if row["prediction"] == 1]
    assert len(positive) >= 8
    for row in positive:
        assert row["layer_integrated_gradients/top_tokens"].startswith("brilliant ("), row
    assert report.metrics()["xai/layer_integrated_gradients/completeness_pass_fraction"] == 1.0
