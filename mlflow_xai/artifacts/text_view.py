"""Token attributions for a person to read: highlighted text in the report, a PNG per method.

Our own rendering, no scripts: every token is HTML-escaped, and its background shows its signed
score (red for evidence for the explained class, blue against), scaled per sample by the largest
|score| among its tokens, or by a fixed bound (``artifacts.color_scale``) so that samples and runs
compare. Padding is not shown; special tokens ([CLS], [SEP], ...) are shown greyed and are never
ranked.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import matplotlib

from mlflow_xai.artifacts.viz import plain_text

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mlflow_xai.artifacts.review_plots import _save  # noqa: E402


def _scale(scores: np.ndarray, ranked: np.ndarray, fixed: float | None) -> float:
    if fixed is not None:
        return float(fixed)
    values = np.abs(scores[ranked])
    return float(values.max()) if values.size and values.max() > 0 else 1.0


def _rgba(value: float, bound: float) -> tuple[float, float, float, float]:
    strength = float(np.clip(abs(value) / bound, 0.0, 1.0))
    return (0.84, 0.19, 0.15, strength) if value >= 0 else (0.13, 0.4, 0.67, strength)


def highlighted_html(
    tokens: np.ndarray, scores: np.ndarray, attention: np.ndarray, kept: np.ndarray, fixed: float | None
) -> str:
    """One sample's tokens as escaped ``<span>``s, each coloured by its score (title: the score)."""
    ranked = ~kept
    bound = _scale(scores, ranked, fixed)
    spans = []
    for token, score, real, special in zip(tokens, scores, attention, kept, strict=True):
        if not real:
            continue
        text = escape(str(token))
        if special:
            spans.append(f'<span class="tok special">{text}</span>')
            continue
        r, g, b, a = _rgba(float(score), bound)
        style = f"background: rgba({int(r * 255)}, {int(g * 255)}, {int(b * 255)}, {a:.2f})"
        spans.append(f'<span class="tok" style="{style}" title="{float(score):.4g}">{text}</span>')
    return " ".join(spans)


@plain_text
def text_figure(
    tokens: np.ndarray,
    scores: np.ndarray,
    attention: np.ndarray,
    kept: np.ndarray,
    path: Path,
    *,
    title: str,
    fixed: float | None,
    per_line: int = 60,
) -> Path:
    """The first samples' tokens on coloured boxes, one block of lines per sample."""
    lines: list[list[tuple[str, tuple[float, float, float, float]]]] = []
    for i in range(len(tokens)):
        bound = _scale(scores[i], ~kept[i], fixed)
        line: list[tuple[str, tuple[float, float, float, float]]] = []
        width = 0
        for token, score, real, special in zip(tokens[i], scores[i], attention[i], kept[i], strict=True):
            if not real:
                continue
            colour = (0.85, 0.85, 0.85, 0.6) if special else _rgba(float(score), bound)
            if width + len(str(token)) + 1 > per_line and line:
                lines.append(line)
                line, width = [], 0
            line.append((str(token), colour))
            width += len(str(token)) + 1
        lines.append(line)
        lines.append([])  # a gap between samples
    fig, ax = plt.subplots(figsize=(0.08 * per_line + 0.5, 0.28 * len(lines) + 0.6))
    ax.set_axis_off()
    ax.set_xlim(0, per_line)
    ax.set_ylim(len(lines), -0.5)
    for row, line in enumerate(lines):
        x = 0.0
        for token, colour in line:
            ax.text(
                x, row, token, family="monospace", fontsize=8, va="center",
                bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.0},
            )  # fmt: skip
            x += len(token) + 1
    ax.set_title(title, fontsize=9)
    _save(fig, path)
    return path
