"""Figures for reviewers: original / heat map / overlay sheets, as Captum's visualiser lays them out.

Sign modes follow Captum's ``visualize_image_attr_multiple``: ``all`` shows signed attributions on a
diverging map, ``positive`` and ``negative`` show one sign only (negative as its magnitude) and
``absolute_value`` shows |attribution|. Each heat map is scaled per image unless a fixed colour scale
is given, which makes sheets of different methods and runs comparable colour for colour.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import LogFormatterSciNotation  # noqa: E402

SIGNS = ("all", "positive", "negative", "absolute_value")
# Colour map and label per sign mode (Captum's choices, with a diverging map for "all").
_SIGN_STYLE = {
    "all": ("RdBu_r", "attribution (signed)"),
    "positive": ("Greens", "positive attribution"),
    "negative": ("Reds", "|negative attribution|"),
    "absolute_value": ("Blues", "|attribution|"),
}
GROUND_TRUTH_COLOUR = "lime"

# Every text the package draws is literal. Ids, class, feature and method names come from users and
# may hold "$", "\\", "^" or "%": parsed as math, "$\\alpha$" would be drawn as a glyph and
# "scan_$\\undefined$" would abort the artifacts after all compute.
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False, "axes.formatter.use_mathtext": False}
_P = ParamSpec("_P")
_R = TypeVar("_R")
_SUPERSCRIPT = str.maketrans(
    "-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
)


def plain_text(draw: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a drawing function with math parsing off (``PLAIN_TEXT``).

    Titles, labels and legends take the setting when they are made, tick labels when the figure is
    drawn: the whole function, up to ``savefig``, must run inside.
    """

    @functools.wraps(draw)
    def plain(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with matplotlib.rc_context(PLAIN_TEXT):
            return draw(*args, **kwargs)

    return plain


class PlainLogFormatter(LogFormatterSciNotation):
    """Base-10 log-axis tick labels in plain text (10\u207b\u00b3, 2\u00d710\u207b\u00b3).

    matplotlib's own are math text, which shows as ``$\\mathdefault{10^{-3}}$`` with math parsing off.
    """

    def __call__(self, x: float, pos: int | None = None) -> str:
        if x <= 0 or not super().__call__(x, pos):  # matplotlib still picks the ticks that get a label
            return ""
        exponent = math.floor(math.log10(x) + 1e-9)
        coefficient = x / 10.0**exponent
        power = "10" + str(exponent).translate(_SUPERSCRIPT)
        return power if math.isclose(coefficient, 1.0) else f"{coefficient:.3g}\u00d7{power}"


def plain_log_ticks(fig: Figure) -> None:
    """Give every log axis of ``fig`` plain-text tick labels (``PlainLogFormatter``)."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                axis.set_major_formatter(PlainLogFormatter())
                axis.set_minor_formatter(PlainLogFormatter())


def is_image_shape(shape: tuple[int, ...]) -> bool:
    """(C, H, W) with 1 or 3 channels, or (H, W)."""
    return (len(shape) == 3 and shape[0] in (1, 3)) or len(shape) == 2


def is_tabular_shape(shape: tuple[int, ...]) -> bool:
    """One feature vector per sample: probe inputs of shape (N, F)."""
    return len(shape) == 1


def _to_display(image: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) in any range -> (H, W, 3) in [0, 1] for imshow."""
    img = image.astype(np.float64)
    if img.ndim == 3:
        img = np.moveaxis(img, 0, -1)
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, axis=-1)
    else:
        img = np.stack([img] * 3, axis=-1)
    lo, hi = img.min(), img.max()
    if lo < 0.0 or hi > 1.0:  # normalised inputs: rescale for display only
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    return img


def _channel_sum(attr: np.ndarray) -> np.ndarray:
    a = attr.astype(np.float64)
    return a.sum(axis=0) if a.ndim == 3 else a


def sign_map(attribution: np.ndarray, sign: str) -> np.ndarray:
    """The 2-D map a sign mode shows: channels summed, then kept, clipped or made absolute.

    ``negative`` returns the magnitude of the negative part, so every mode but ``all`` is >= 0.
    """
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {', '.join(SIGNS)}, got {sign!r}")
    heat = _channel_sum(attribution)
    if sign == "positive":
        return np.maximum(heat, 0.0)
    if sign == "negative":
        return np.maximum(-heat, 0.0)
    if sign == "absolute_value":
        return np.abs(heat)
    return heat


def colour_limits(heat: np.ndarray, sign: str, color_scale: float | None) -> tuple[float, float]:
    """(vmin, vmax) of a heat map: symmetric for ``all``, from 0 otherwise.

    Per image (``color_scale`` None) the bound is the map's largest magnitude; an all-zero map gets a
    unit bound so that it is drawn as what it is, a flat map at zero.
    """
    if color_scale is not None:
        bound = float(color_scale)
    else:
        bound = float(np.abs(heat).max()) if heat.size else 0.0
        bound = bound if bound > 0 else 1.0
    return (-bound, bound) if sign == "all" else (0.0, bound)


def heat_rgba(heat: np.ndarray, sign: str, color_scale: float | None) -> np.ndarray:
    """The (H, W, 4) colours of a sign map; values beyond a fixed colour scale saturate."""
    vmin, vmax = colour_limits(heat, sign, color_scale)
    norm = Normalize(vmin=vmin, vmax=vmax, clip=True)
    return matplotlib.colormaps[_SIGN_STYLE[sign][0]](norm(heat))


@plain_text
def attribution_sheet(
    images: np.ndarray,
    attributions: np.ndarray,
    path: Path,
    *,
    title: str,
    captions: Sequence[str],
    masks: np.ndarray | None = None,
    sign: str = "all",
    color_scale: float | None = None,
) -> Path:
    """One row per sample: the input, the heat map in the chosen sign mode, and the map over the input.

    Where ground-truth ``masks`` are given their outline is drawn on all three panels.
    """
    n = len(images)
    if n == 0:
        raise ValueError("an attribution sheet needs at least one sample")
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {', '.join(SIGNS)}, got {sign!r}")
    cmap, heat_label = _SIGN_STYLE[sign]
    scale_note = "per-image colour scale" if color_scale is None else f"fixed colour scale {color_scale:g}"
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.4 * n + 0.8), squeeze=False)
    fig.suptitle(f"{title}\nsign: {sign}, {scale_note}", fontsize=10)
    for i in range(n):
        image = _to_display(images[i])
        heat = sign_map(attributions[i], sign)
        vmin, vmax = colour_limits(heat, sign, color_scale)
        ax_img, ax_heat, ax_overlay = axes[i]
        ax_img.imshow(image)
        ax_img.set_ylabel(captions[i], fontsize=8)
        ax_heat.imshow(heat_rgba(heat, sign, color_scale))
        fig.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap), ax=ax_heat, fraction=0.046, pad=0.04)
        # The overlay shows magnitude: |signed map| on "inferno", or the one-signed map itself.
        overlay, overlay_cmap = (np.abs(heat), "inferno") if sign == "all" else (heat, cmap)
        ax_overlay.imshow(image.mean(axis=-1), cmap="gray", vmin=0.0, vmax=1.0)
        ax_overlay.imshow(overlay, cmap=overlay_cmap, alpha=0.6, vmin=0.0, vmax=vmax)
        if masks is not None:
            for ax in (ax_img, ax_heat, ax_overlay):
                ax.contour(masks[i].astype(float), levels=[0.5], colors=GROUND_TRUTH_COLOUR, linewidths=0.8)
        if i == 0:
            ax_img.set_title("input", fontsize=9)
            ax_heat.set_title(f"{heat_label}, channel sum", fontsize=9)
            ax_overlay.set_title("heat map over input", fontsize=9)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def feature_importance(attributions: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Mean |attribution| per feature of tabular attributions (N, F), accumulated in float64."""
    total = np.zeros(attributions.shape[1], dtype=np.float64)
    for start in range(0, len(attributions), chunk):
        total += np.abs(attributions[start : start + chunk].astype(np.float64)).sum(axis=0)
    return total / max(len(attributions), 1)


@plain_text
def feature_bar_chart(
    names: Sequence[str], importance: np.ndarray, path: Path, *, title: str, top: int = 20
) -> Path:
    """Horizontal bars of the ``top`` features by mean |attribution|, the largest at the top."""
    order = np.argsort(-importance, kind="stable")[:top]
    shown = order[::-1]  # barh draws bottom-up
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(order) + 1.2))
    ax.barh([str(names[i]) for i in shown], importance[shown], color="#3b6ea8")
    ax.set(xlabel="mean |attribution|", title=title)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
