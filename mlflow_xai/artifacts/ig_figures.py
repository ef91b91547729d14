"""Figures that show how Integrated Gradients converges, sample by sample.

``ig_path_profiles`` walks the straight path from baseline to input once, on the finest nested
trapezoid grid, and keeps per node the explained output F, the mean gradient magnitude and the
gradient's contribution to the attribution sum; the completeness error of every coarser nested grid
follows from those without another gradient. ``ig_convergence_figures`` draws them:

* ``ig_completeness_vs_steps.png``: relative completeness error against gradient evaluations;
* ``ig_output_along_path.png``: F(x' + a (x - x')) over a (for a probability output, the target
  class probability over alpha);
* ``ig_gradient_along_path.png``: mean |dF/dx| over alpha, where the integrand lives.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

from mlflow_xai.artifacts.viz import plain_log_ticks, plain_text
from mlflow_xai.attribution.path_profiles import IGPathProfiles

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FIGURES = ("ig_completeness_vs_steps.png", "ig_output_along_path.png", "ig_gradient_along_path.png")


@plain_text
def ig_convergence_figures(
    profiles: IGPathProfiles,
    folder: str | Path,
    *,
    completeness_tolerance: float | None = 0.01,
    output_label: str = "explained output F",
) -> list[Path]:
    """Write the three PNG figures into ``folder`` (created if needed); return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in FIGURES]

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, errors in zip(profiles.ids, profiles.completeness_rel_error, strict=True):
        # log axis: an exact zero has no place, nor an inf (F(x) == F(x'), a degenerate baseline)
        shown = np.where(np.isfinite(errors) & (errors > 0), errors, np.nan)
        ax.plot(profiles.steps, shown, marker="o", label=name)
    if completeness_tolerance is not None:
        ax.axhline(completeness_tolerance, color="black", linestyle="--", linewidth=1, label="tolerance")
    errors = profiles.completeness_rel_error
    drawable = bool((np.isfinite(errors) & (errors > 0)).any())
    if not drawable:  # every error is 0, NaN or inf: say so instead of failing on an empty log axis
        ax.text(0.5, 0.5, "no finite, non-zero error to draw", ha="center", transform=ax.transAxes)
    ax.set(
        xscale="log" if drawable else "linear",
        yscale="log" if drawable else "linear",
        xlabel="gradient evaluations (uniform trapezoid)",
        ylabel="relative completeness error",
        title="Completeness error against steps",
    )
    ax.legend(fontsize="small")
    _save(fig, paths[0])

    for values, label, title, path in (
        (profiles.outputs, output_label, "Explained output along the path", paths[1]),
        (profiles.grad_magnitude, "mean |dF/dx|", "Gradient magnitude along the path", paths[2]),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, row in zip(profiles.ids, values, strict=True):
            ax.plot(profiles.alphas, row, label=name)
        ax.set(xlabel="alpha (baseline = 0, input = 1)", ylabel=label, title=title)
        ax.legend(fontsize="small")
        _save(fig, path)
    return paths


def _save(fig: plt.Figure, path: Path) -> None:
    plain_log_ticks(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
