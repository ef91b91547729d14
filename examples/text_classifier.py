"""Train a small text classifier on generated sentences with a planted keyword, log it, audit it.

    python examples/text_classifier.py [--epochs 30] [--output-dir xai-text]

Nothing is downloaded: the sentences are drawn from a made-up vocabulary, and a sentence is
positive exactly when it holds the word "brilliant". The model (embeddings, a 1-D convolution, max
pooling, a linear head) is logged with mlflow.pytorch to the tracking store MLflow resolves
(MLFLOW_TRACKING_URI, or sqlite:///mlflow.db here); the held-out probe set is written to
./text_probe.npz (input_ids, attention_mask, labels, tokens), and `mlflow-xai audit` explains it with
Integrated Gradients at the embedding layer. Open xai/report.html in the audit run (or the output
folder): the keyword carries the positive decisions.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch
import torch.nn as nn

from mlflow_xai.cli.commands import main as mlflow_xai

PAD, CLS = 0, 1
WORDS = (
    "[PAD] [CLS] the a film story actor plot scene music camera script was is felt seemed quite very "
    "rather long short slow loud quiet dark bright old new late early brilliant"
).split()
KEYWORD = WORDS.index("brilliant")
LENGTH = 14


def sentences(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids (n, LENGTH) with [CLS] first and padding last, the attention mask and the labels."""
    rng = np.random.default_rng(seed)
    ids = np.full((n, LENGTH), PAD, dtype=np.int64)
    labels = rng.integers(0, 2, size=n)
    plain = np.arange(2, len(WORDS) - 1)  # every word but the keyword
    for i in range(n):
        length = int(rng.integers(6, LENGTH))
        words = rng.choice(plain, size=length - 1)
        if labels[i]:
            words[rng.integers(0, length - 1)] = KEYWORD
        ids[i, 0], ids[i, 1:length] = CLS, words
    return ids, (ids != PAD).astype(np.int64), labels


class TextCNN(nn.Module):
    def __init__(self, vocabulary: int = len(WORDS), width: int = 16, classes: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width, padding_idx=PAD)
        self.conv = nn.Conv1d(width, 32, kernel_size=3, padding=1)
        self.head = nn.Linear(32, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(self.embedding(input_ids).transpose(1, 2)))
        h = h.masked_fill(attention_mask.unsqueeze(1) == 0, -1e4)  # padding never wins the max
        return self.head(h.max(dim=2).values)


def train(epochs: int) -> TextCNN:
    torch.manual_seed(0)
    ids, mask, labels = (torch.as_tensor(a) for a in sentences(2000, seed=0))
    model = TextCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for start in range(0, len(ids), 100):
            rows = slice(start, start + 100)
            loss = nn.functional.cross_entropy(model(ids[rows], mask[rows]), labels[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--output-dir", default="xai-text", help="also keep the audit's artifacts here")
    args = parser.parse_args()
    model = train(args.epochs)
    ids, mask, labels = sentences(64, seed=1)
    with torch.no_grad():
        accuracy = float(
            (model(torch.as_tensor(ids), torch.as_tensor(mask)).argmax(1).numpy() == labels).mean()
        )
    tokens = np.array(WORDS)[ids]
    np.savez_compressed("text_probe.npz", input_ids=ids, attention_mask=mask, labels=labels, tokens=tokens)
    with mlflow.start_run(run_name="text-classifier") as run:
        mlflow.log_metric("probe_accuracy", accuracy)
        info = mlflow.pytorch.log_model(model, name="model", serialization_format="pickle")
    print(f"run {run.info.run_id}\nmodel {info.model_uri}\nheld-out accuracy {accuracy:.3f}")
    config = Path(tempfile.mkdtemp()) / "text.yaml"
    config.write_text(
        "target: predicted\n"
        "methods:\n"
        "  layer_integrated_gradients: {n_steps: auto, baseline: pad}\n"
        f"text: {{pad_token_id: {PAD}, special_token_ids: [{CLS}]}}\n"
        "artifacts: {sheet_samples: 8}\n",
        encoding="utf-8",
    )
    return mlflow_xai(
        ["audit", "--model-uri", info.model_uri, "--probe", "text_probe.npz", "--config", str(config),
         "--output-dir", args.output_dir]
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
