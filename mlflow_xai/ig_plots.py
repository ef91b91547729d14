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

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mlflow_xai.adaptive import ExplainedOutput  # noqa: E402
from mlflow_xai.checks import completeness_error  # noqa: E402
from mlflow_xai.viz import plain_log_ticks, plain_text  # noqa: E402

FIGURES = ("ig_completeness_vs_steps.png", "ig_output_along_path.png", "ig_gradient_along_path.png")


@dataclass(frozen=True)
class IGPathProfiles:
    """Per-sample quantities along the IG path, as numpy arrays (S samples, A nodes, L grids)."""

    ids: list[str]
    alphas: np.ndarray  # (A,) the nodes j / 2^K of the finest grid
    outputs: np.ndarray  # (S, A) F along the path
    grad_magnitude: np.ndarray  # (S, A) mean |dF/dx| over the input's features
    steps: np.ndarray  # (L,) gradient evaluations of each nested grid: 3, 5, 9, ..., 2^K + 1
    completeness_rel_error: np.ndarray  # (S, L) of trapezoid IG on each grid
    seconds: float = 0.0  # time spent evaluating the path for the figures


def ig_path_profiles(
    f: ExplainedOutput,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    *,
    ids: Sequence[str] | None = None,
    max_steps: int = 257,
    internal_batch_size: int = 512,
    degenerate_floor: float = 1e-6,
) -> IGPathProfiles:
    """Evaluate F and its gradient at the 2^K + 1 nodes of the finest grid (2^K + 1 <= max_steps).

    Completeness errors follow ``mlflow_xai.checks.completeness_error`` (NaN for a degenerate
    baseline), as the check and adaptive IG judge them."""
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 3:
        raise ValueError(f"max_steps must be an integer >= 3, got {max_steps!r}")
    intervals = 2
    while 2 * intervals + 1 <= max_steps:
        intervals *= 2
    batch = x.shape[0]
    baseline = baseline.expand_as(x)
    delta = x - baseline
    alphas = torch.arange(intervals + 1, dtype=torch.float64) / intervals
    outputs = torch.empty(batch, intervals + 1, dtype=torch.float64)
    grad_magnitude = torch.empty_like(outputs)
    contribution = torch.empty_like(outputs)  # sum_i delta_i * dF/dx_i at each node
    total = (intervals + 1) * batch
    for start in range(0, total, internal_batch_size):
        pair = torch.arange(start, min(start + internal_batch_size, total))
        k, b = pair // batch, pair % batch
        alpha = alphas[k].to(x.dtype).view(-1, *([1] * (x.ndim - 1))).to(x.device)
        points = (baseline[b] + alpha * delta[b]).requires_grad_(True)
        values = f(points, target[b])
        (grads,) = torch.autograd.grad(values.sum(), points)
        outputs[b, k] = values.detach().double().cpu()
        grad_magnitude[b, k] = grads.abs().flatten(1).mean(dim=1).double().cpu()
        contribution[b, k] = (grads * delta[b]).flatten(1).sum(dim=1).double().cpu()

    eps = torch.finfo(x.dtype).eps  # the outputs were computed in the inputs' dtype
    levels, errors = [], []
    grid = 2
    while grid <= intervals:
        stride = intervals // grid
        weights = torch.full((grid + 1,), 1.0 / grid, dtype=torch.float64)
        weights[[0, -1]] *= 0.5
        attribution_sum = contribution[:, ::stride] @ weights
        error, _ = completeness_error(
            attribution_sum, outputs[:, -1], outputs[:, 0], degenerate_floor=degenerate_floor, eps=eps
        )
        errors.append(error.numpy())
        levels.append(grid + 1)
        grid *= 2
    names = [str(i) for i in range(batch)] if ids is None else [str(i) for i in ids]
    if len(names) != batch:
        raise ValueError(f"ids must name each of the {batch} samples, got {len(names)}")
    return IGPathProfiles(
        ids=names,
        alphas=alphas.numpy(),
        outputs=outputs.numpy(),
        grad_magnitude=grad_magnitude.numpy(),
        steps=np.array(levels),
        completeness_rel_error=np.stack(errors, axis=1),
    )


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
