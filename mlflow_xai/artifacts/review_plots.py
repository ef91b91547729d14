"""Summary plots of an audit: distributions of the checks and the per-class summary."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

from mlflow_xai.artifacts.viz import plain_log_ticks, plain_text

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

MAX_CLASSES_SHOWN = 30


@plain_text
def completeness_histogram(
    errors: Mapping[str, np.ndarray], path: Path, *, tolerance: float | None
) -> Path | None:
    """Histogram of the relative completeness error per method, on a log x axis.

    Exact zeros have no place on a log axis; they are counted in the legend instead. Returns None
    when no method has a finite error to draw.
    """
    finite = {name: e[np.isfinite(e)] for name, e in errors.items()}
    positive = {name: e[e > 0] for name, e in finite.items()}
    drawn = np.concatenate([e for e in positive.values()] or [np.empty(0)])
    if not any(len(e) for e in finite.values()):
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if len(drawn):
        lo, hi = float(drawn.min()), float(drawn.max())
        if tolerance:
            lo, hi = min(lo, tolerance), max(hi, tolerance)
        # Whole decades, with the largest error (and the tolerance line) clear of the right edge.
        lo_exp, hi_exp = math.floor(math.log10(lo)), math.floor(math.log10(hi)) + 1
        bins = np.logspace(lo_exp, max(hi_exp, lo_exp + 1), 4 * max(hi_exp - lo_exp, 1) + 1)
        for name, values in positive.items():
            zeros = len(finite[name]) - len(values)
            label = name if not zeros else f"{name} ({zeros} exactly 0)"
            ax.hist(values, bins=bins, alpha=0.6, label=label)
        ax.set_xscale("log")
    if tolerance:
        ax.axvline(tolerance, color="black", linestyle="--", linewidth=1, label=f"tolerance {tolerance:g}")
    ax.set(xlabel="relative completeness error", ylabel="samples", title="Completeness error per sample")
    ax.legend(fontsize="small")
    _save(fig, path)
    return path


@plain_text
def steps_histogram(steps: Mapping[str, np.ndarray], path: Path) -> Path | None:
    """Histogram of the gradient evaluations each sample used (IG's ``steps`` extra)."""
    values = {name: s[np.isfinite(s)].astype(np.float64) for name, s in steps.items()}
    values = {name: v for name, v in values.items() if len(v)}
    if not values:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    everything = np.concatenate(list(values.values()))
    distinct = np.unique(everything)
    if len(distinct) <= 12:  # a few step counts (nested grids): one bar each, equally spaced
        positions = np.arange(len(distinct))
        width = 0.8 / len(values)
        for k, (name, v) in enumerate(values.items()):
            counts = [(v == d).sum() for d in distinct]
            ax.bar(positions + k * width, counts, width=width, label=name)
        ax.set_xticks(positions + 0.4 - width / 2, [f"{d:g}" for d in distinct])
    else:
        for name, v in values.items():
            ax.hist(v, bins=30, alpha=0.6, label=name)
    ax.set(xlabel="gradient evaluations per sample", ylabel="samples", title="Steps used per sample")
    ax.legend(fontsize="small")
    _save(fig, path)
    return path


@plain_text
def class_summary_figure(rows: Sequence[Mapping[str, object]], path: Path) -> Path | None:
    """Per class, side by side: sample count, accuracy and each method's median completeness error."""
    if not rows:
        return None
    title = "Per-class summary"
    if len(rows) > MAX_CLASSES_SHOWN:  # keep the figure readable: the most frequent classes
        title += f" ({MAX_CLASSES_SHOWN} most frequent of {len(rows)} classes)"
        rows = sorted(rows, key=lambda r: -int(r["count"]))[:MAX_CLASSES_SHOWN]
    classes = [str(r["class"]) for r in rows]
    panels: list[tuple[str, list[float], dict[str, object]]] = [
        ("samples", [float(r["count"]) for r in rows], {})
    ]
    if any(isinstance(r.get("accuracy"), float) for r in rows):
        accuracy = [r["accuracy"] if isinstance(r["accuracy"], float) else np.nan for r in rows]
        panels.append(("accuracy", accuracy, {"xlim": (0, 1.2), "xticks": [0, 0.5, 1]}))
    for key in rows[0]:
        if key.endswith("/completeness_rel_error_median"):
            values = [float(r[key]) for r in rows]
            method = key.split("/")[0]
            panels.append((f"{method}\nmedian completeness error", values, {}))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(2.6 * len(panels) + 0.8, 0.35 * len(rows) + 1.6), sharey=True, squeeze=False
    )
    positions = np.arange(len(classes))
    for ax, (label, values, limits) in zip(axes[0], panels, strict=True):
        ax.barh(positions, values, color="#3b6ea8")
        for y, v in zip(positions, values, strict=True):
            if np.isfinite(v):
                ax.annotate(
                    _cell(v), (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7
                )
        ax.set(xlabel=label, **limits)
        if "xticks" not in limits:
            ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.margins(x=0.25)
    axes[0][0].set_yticks(positions, classes)
    axes[0][0].set_ylabel("class")
    axes[0][0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    _save(fig, path)
    return path


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.3g}"
    return str(value)


def _save(fig: plt.Figure, path: Path) -> None:
    plain_log_ticks(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
