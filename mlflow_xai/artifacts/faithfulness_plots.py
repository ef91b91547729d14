"""Figures of the faithfulness checks: deletion and insertion curves, and the randomisation cascade.

plots/deletion_insertion.png      per method: the mean normalised curves against random rankings,
                                  with the middle half of the probe set shaded
plots/randomisation.png           mean similarity to the trained model's maps, stage by stage
<method>/randomisation_cascade.png  images: the first samples' maps as the layers go random
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

from mlflow_xai.artifacts.viz import plain_text

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mlflow_xai.artifacts.review_plots import _save  # noqa: E402

_CURVES = (
    ("deletion", "deletion_curve", "deletion_random_curve"),
    ("insertion", "insertion_curve", "insertion_random_curve"),
)


def _band(ax: plt.Axes, x: np.ndarray, curves: np.ndarray, colour: str, label: str, style: str) -> None:
    """Median line and the 25th to 75th percentile band of ``curves`` (samples, points), NaN rows out.

    The median, not the mean: a sample whose output moves past F(x) or F(x') on the way leaves the
    normalised range, and one such sample would pull a mean line anywhere."""
    rows = curves[np.isfinite(curves).all(axis=1)]
    if not len(rows):
        return
    low, middle, high = np.percentile(rows, [25, 50, 75], axis=0)
    ax.plot(x, middle, style, color=colour, label=label, linewidth=1.6)
    ax.fill_between(x, low, high, color=colour, alpha=0.15, linewidth=0)


@plain_text
def deletion_insertion_figure(curves: Mapping[str, Mapping[str, np.ndarray]], path: Path) -> Path | None:
    """One row per result (``{key: extras}`` holding ``deletion_curve`` etc.), deletion then
    insertion; None when no result has the curves."""
    results = {key: extras for key, extras in curves.items() if "deletion_curve" in extras}
    if not results:
        return None
    fig, axes = plt.subplots(len(results), 2, figsize=(8, 2.6 * len(results)), squeeze=False, sharex=True)
    for row, (key, extras) in zip(axes, results.items(), strict=True):
        for ax, (kind, ours, random) in zip(row, _CURVES, strict=True):
            x = np.linspace(0, 1, extras[ours].shape[1])
            _band(ax, x, extras[ours], "#3b6ea8", key, "-")
            _band(ax, x, extras[random], "#888888", "random order", "--")
            ax.set(title=f"{key}: {kind}", ylabel="normalised output")
            low, high = ax.get_ylim()
            ax.set_ylim(max(low, -1.0), min(high, 2.0))  # outliers beyond are clipped, not rescaled
            ax.legend(fontsize="small")
    for ax in axes[-1]:
        ax.set_xlabel("fraction of features " + ("removed" if ax is axes[-1][0] else "inserted"))
    _save(fig, path)
    return path


@plain_text
def randomisation_figure(
    cascades: Mapping[str, np.ndarray],
    layers: Sequence[str],
    path: Path,
    *,
    measure: str,
    max_similarity: float,
    verdict_stage: int,
) -> Path | None:
    """Mean similarity by stage (``{key: (samples, stages)}``), the threshold and the verdict stage."""
    if not cascades or not layers:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(layers) + 2), 3.8))
    x = np.arange(1, len(layers) + 1)
    for key, curve in cascades.items():
        with np.errstate(all="ignore"):
            finite = np.where(np.isfinite(curve), curve, np.nan)
            mean = np.nanmean(finite, axis=0) if np.isfinite(finite).any() else np.full(len(x), np.nan)
        ax.plot(x, mean, "o-", label=key, linewidth=1.4, markersize=4)
    ax.axhline(
        max_similarity, color="black", linestyle="--", linewidth=1, label=f"pass below {max_similarity:g}"
    )
    ax.axvline(verdict_stage, color="#b71c1c", linestyle=":", linewidth=1, label="verdict stage")
    ax.set_xticks(x, [f"{k}: {name}" for k, name in zip(x, layers, strict=True)], rotation=40, ha="right")
    ax.set(
        xlabel="randomised from the top down to layer",
        ylabel=f"similarity ({measure})",
        title="Model randomisation: similarity to the trained model's maps",
    )
    ax.legend(fontsize="small")
    _save(fig, path)
    return path


@plain_text
def cascade_maps_figure(
    trained: np.ndarray, stages: np.ndarray, layers: Sequence[str], path: Path, *, title: str
) -> Path:
    """Rows: samples; columns: the trained model's map, then each stage's. Each panel shows the
    channel-summed |attribution| scaled to its own maximum."""
    samples = trained.shape[0]
    columns = 1 + len(layers)
    fig, axes = plt.subplots(
        samples, columns, figsize=(1.5 * columns + 0.4, 1.6 * samples + 0.6), squeeze=False
    )
    for i in range(samples):
        panels = [trained[i], *(stage[i] for stage in stages)]
        for j, (ax, values) in enumerate(zip(axes[i], panels, strict=True)):
            heat = np.abs(np.asarray(values, dtype=np.float64)).sum(axis=0)
            peak = heat.max()
            ax.imshow(heat / peak if peak > 0 else heat, cmap="magma", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("trained" if j == 0 else f"to {layers[j - 1]}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)
    return path
