"""Figures for reviewers: sheets of the input and its attributions, as Captum's visualiser draws them.

Each row of a sheet shows one sample in the columns ``artifacts.sheet_columns`` names, the methods of
Captum's ``visualize_image_attr_multiple``: ``original_image``, ``heat_map``, ``blended_heat_map``
(the map over the input in grey), ``masked_image`` (the input times the normalised map) and
``alpha_scaling`` (the input with the normalised map as its opacity). Sign modes are Captum's too:
``all`` shows signed attributions on a diverging map, ``positive`` and ``negative`` one sign only
(negative as its magnitude) and ``absolute_value`` |attribution|. A map is normalised as Captum does
it: divided by a per-image scale at which the largest values, those that hold ``outlier_perc`` percent
of the map's total |attribution|, saturate; a fixed colour scale replaces it, which makes sheets of
different methods and runs comparable colour for colour.

The input is drawn as the user sees it: ``ImageDisplay`` maps model inputs back to colours with one
affine map per channel (a probe's normalisation undone), the same for every row of every sheet,
never a stretch of each image on its own, which would show one grey in as many shades as there are
rows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
# Captum's visualisation methods, one per sheet column, and the default: input / heat map / overlay.
COLUMNS = ("original_image", "heat_map", "blended_heat_map", "masked_image", "alpha_scaling")
DEFAULT_COLUMNS = ("original_image", "heat_map", "blended_heat_map")
# These scale the input by the normalised map, which must then be one-signed (Captum refuses "all").
ONE_SIGNED_COLUMNS = ("masked_image", "alpha_scaling")
OUTLIER_PERC = 2.0  # Captum's default: the largest values holding 2% of the total saturate
ALPHA_OVERLAY = 0.5  # Captum's default opacity of a blended heat map
_COLUMN_TITLES = {
    "original_image": "input",
    "blended_heat_map": "heat map over input",
    "masked_image": "input x normalised map",
    "alpha_scaling": "input, opacity = normalised map",
}
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


@dataclass(frozen=True)
class ImageDisplay:
    """How model inputs become the colours a reviewer sees: ``x * scale + offset`` per channel, clipped
    to [0, 1]. One instance draws every row of every sheet of an audit, so equal inputs show as
    equal colours wherever they are. ``description`` is drawn on the sheet: how the input is shown
    is never left for the reader to guess.

    ``scale`` and ``offset`` hold one value per channel, or one value for all channels.
    """

    scale: tuple[float, ...]
    offset: tuple[float, ...]
    description: str

    @classmethod
    def unnormalize(cls, mean: Sequence[float], std: Sequence[float], *, source: str) -> ImageDisplay:
        """Undo ``(x - mean) / std`` (torchvision's ``Normalize``): the image before normalisation."""
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} values and std {len(std)}; give one of each per channel")
        return cls(
            tuple(float(s) for s in std),
            tuple(float(m) for m in mean),
            f"x * std + mean ({source}), clipped to [0, 1]",
        )

    @classmethod
    def as_is(cls, description: str = "as given") -> ImageDisplay:
        """The inputs themselves, for inputs already in [0, 1] (values outside are clipped)."""
        return cls((1.0,), (0.0,), description)

    @classmethod
    def stretch(cls, lo: float, hi: float, *, over: str, note: str = "") -> ImageDisplay:
        """One min-max stretch of [lo, hi] to [0, 1] for all channels and rows (``over`` says of what)."""
        if not hi > lo:  # a constant input has no range to stretch: show it as it is
            return cls.as_is(f"as given, clipped to [0, 1] ({over} is constant){note}")
        span = hi - lo
        return cls((1.0 / span,), (-lo / span,), f"min-max over {over}, [{lo:.4g}, {hi:.4g}] to [0, 1]{note}")

    @classmethod
    def for_range(cls, lo: float, hi: float, *, over: str, note: str = "") -> ImageDisplay:
        """Inputs of unknown normalisation: as they are where they lie in [0, 1], else ``stretch``."""
        if 0.0 <= lo and hi <= 1.0:
            return cls.as_is()
        return cls.stretch(lo, hi, over=over, note=note)

    def fits(self, channels: int) -> bool:
        return len(self.scale) in (1, channels)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(C, H, W) or (H, W) -> (H, W, 3) in [0, 1] for imshow; one channel is drawn as grey."""
        img = image.astype(np.float64)
        if img.ndim == 2:
            img = img[None]
        channels = img.shape[0]
        if not self.fits(channels):
            raise ValueError(
                f"the display map has {len(self.scale)} values per channel but the image has {channels} "
                "channels"
            )
        scale = np.asarray(self.scale, dtype=np.float64)[:, None, None]
        offset = np.asarray(self.offset, dtype=np.float64)[:, None, None]
        shown = np.moveaxis(np.clip(img * scale + offset, 0.0, 1.0), 0, -1)
        return np.repeat(shown, 3, axis=-1) if channels == 1 else shown


def finite_range(images: np.ndarray, chunk_values: int = 1 << 23) -> tuple[float, float]:
    """(min, max) of the finite values of ``images``, read about ``chunk_values`` values at a time, so
    that a memory-mapped probe set of any size is scanned in bounded memory."""
    lo, hi = math.inf, -math.inf
    per_sample = max(int(np.prod(images.shape[1:])), 1)
    chunk = max(chunk_values // per_sample, 1)
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start : start + chunk], dtype=np.float64)
        block = block[np.isfinite(block)]
        if block.size:
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


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


def outlier_scale(magnitude: np.ndarray, outlier_perc: float = OUTLIER_PERC) -> float:
    """Captum's per-image scale of a map of magnitudes (>= 0), as its ``_cumulative_sum_threshold``:
    sorted in ascending order, the value at which the running sum first reaches (100 - outlier_perc)
    percent of the total. The largest values, holding the last ``outlier_perc`` percent, saturate, so
    that one extreme pixel does not wash out the rest of the map; 0 gives the largest value. An
    all-zero map has scale 0.
    """
    if not 0.0 <= outlier_perc < 100.0:
        raise ValueError(f"outlier_perc must be >= 0 and < 100, got {outlier_perc!r}")
    values = np.asarray(magnitude, dtype=np.float64).ravel()
    values = np.sort(values[np.isfinite(values)])
    if not values.size:
        return 0.0
    running = np.cumsum(values)
    reach = running[-1] * 0.01 * (100.0 - outlier_perc)
    return float(values[min(int(np.searchsorted(running, reach, side="left")), values.size - 1)])


def colour_limits(
    heat: np.ndarray, sign: str, color_scale: float | None, outlier_perc: float = OUTLIER_PERC
) -> tuple[float, float]:
    """(vmin, vmax) of a heat map: symmetric for ``all``, from 0 otherwise.

    Per image (``color_scale`` None) the bound is ``outlier_scale`` of the map's magnitudes (its
    largest magnitude with ``outlier_perc`` 0); an all-zero map gets a unit bound so that it is drawn
    as what it is, a flat map at zero. Dividing by the bound and clipping to [vmin, vmax] is
    Captum's normalised map.
    """
    if color_scale is not None:
        bound = float(color_scale)
    else:
        bound = outlier_scale(np.abs(heat), outlier_perc) if heat.size else 0.0
        bound = bound if bound > 0 else 1.0
    return (-bound, bound) if sign == "all" else (0.0, bound)


def normalised_map(heat: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """A sign map over its bound, clipped: [-1, 1] for ``all``, [0, 1] for the one-signed modes."""
    vmin, vmax = limits
    return np.clip(heat / vmax, vmin / vmax, 1.0)


def heat_rgba(
    heat: np.ndarray, sign: str, color_scale: float | None, outlier_perc: float = OUTLIER_PERC
) -> np.ndarray:
    """The (H, W, 4) colours of a sign map; values beyond the bound saturate."""
    vmin, vmax = colour_limits(heat, sign, color_scale, outlier_perc)
    norm = Normalize(vmin=vmin, vmax=vmax, clip=True)
    return matplotlib.colormaps[_SIGN_STYLE[sign][0]](norm(heat))


def masked_image(image: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """Captum's ``masked_image``: the shown input (H, W, 3) times a one-signed normalised map (H, W)."""
    return image * norm[..., None]


def alpha_scaled_image(image: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """Captum's ``alpha_scaling``: the shown input with a one-signed normalised map as opacity (RGBA)."""
    return np.concatenate([image, norm[..., None]], axis=-1)


def check_columns(columns: Sequence[str], sign: str) -> tuple[str, ...]:
    """``columns`` as a tuple, refused when a name is unknown or a one-signed column meets ``all``."""
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {', '.join(SIGNS)}, got {sign!r}")
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown or not columns:
        raise ValueError(f"sheet columns must be one or more of {', '.join(COLUMNS)}, got {list(columns)}")
    signed = [c for c in columns if c in ONE_SIGNED_COLUMNS]
    if signed and sign == "all":
        raise ValueError(
            f"{', '.join(signed)} cannot show sign 'all': a signed map cannot scale an image; "
            "choose positive, negative or absolute_value"
        )
    return tuple(columns)


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
    columns: Sequence[str] = DEFAULT_COLUMNS,
    outlier_perc: float = OUTLIER_PERC,
    display: ImageDisplay | None = None,
) -> Path:
    """One row per sample, one panel per column (``COLUMNS``, Captum's visualisation methods).

    ``display`` maps the inputs to colours, the same for every row; without one, inputs in [0, 1] are
    shown as they are and others with one min-max stretch over all of ``images``. Where ground-truth
    ``masks`` are given their outline is drawn on every panel.
    """
    n = len(images)
    if n == 0:
        raise ValueError("an attribution sheet needs at least one sample")
    columns = check_columns(columns, sign)
    if display is None:
        display = ImageDisplay.for_range(*finite_range(images), over="the images of this sheet")
    cmap, heat_label = _SIGN_STYLE[sign]
    scale_note = _scale_note(color_scale, outlier_perc)
    titles = {**_COLUMN_TITLES, "heat_map": f"{heat_label}, channel sum"}
    fig, axes = plt.subplots(n, len(columns), figsize=(2.5 * len(columns), 2.4 * n + 1.0), squeeze=False)
    fig.suptitle(f"{title}\nsign: {sign}, {scale_note}\ninput: {display.description}", fontsize=9)
    for i in range(n):
        image = display(images[i])
        heat = sign_map(attributions[i], sign)
        limits = colour_limits(heat, sign, color_scale, outlier_perc)
        norm = normalised_map(heat, limits)
        for ax, column in zip(axes[i], columns, strict=True):
            _panel(ax, column, image, heat, norm, limits, cmap, sign, color_scale, outlier_perc)
            if column in ("heat_map", "blended_heat_map"):
                _colour_bar(fig, ax, heat, limits, cmap)
            if masks is not None:
                ax.contour(masks[i].astype(float), levels=[0.5], colors=GROUND_TRUTH_COLOUR, linewidths=0.8)
            if i == 0:
                ax.set_title(titles[column], fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i][0].set_ylabel(captions[i], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _scale_note(color_scale: float | None, outlier_perc: float) -> str:
    """How the sheet's heat maps are scaled, for its title."""
    if color_scale is not None:
        return f"fixed colour scale {color_scale:g}"
    if outlier_perc > 0:
        held = f"{outlier_perc:g}% of |attribution|"
        return f"per-image colour scale, the largest values holding {held} saturate"
    return "per-image colour scale, to the largest value"


def _panel(
    ax: plt.Axes,
    column: str,
    image: np.ndarray,
    heat: np.ndarray,
    norm: np.ndarray,
    limits: tuple[float, float],
    cmap: str,
    sign: str,
    color_scale: float | None,
    outlier_perc: float,
) -> None:
    """Draw one panel of a sheet row: one of Captum's visualisation methods."""
    if column == "original_image":
        ax.imshow(image)
    elif column == "heat_map":
        ax.imshow(heat_rgba(heat, sign, color_scale, outlier_perc))
    elif column == "blended_heat_map":
        ax.imshow(image.mean(axis=-1), cmap="gray", vmin=0.0, vmax=1.0)
        ax.imshow(heat, cmap=cmap, vmin=limits[0], vmax=limits[1], alpha=ALPHA_OVERLAY)
    elif column == "masked_image":
        ax.imshow(masked_image(image, norm))
    else:
        ax.imshow(alpha_scaled_image(image, norm))


def _colour_bar(fig: Figure, ax: plt.Axes, heat: np.ndarray, limits: tuple[float, float], cmap: str) -> None:
    """The map's colour bar in attribution units, with an arrow at each end where values saturate."""
    vmin, vmax = limits
    finite = heat[np.isfinite(heat)]
    low = bool(finite.size) and float(finite.min()) < vmin
    high = bool(finite.size) and float(finite.max()) > vmax
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}
    fig.colorbar(
        ScalarMappable(Normalize(vmin, vmax), cmap),
        ax=ax,
        fraction=0.046,
        pad=0.04,
        extend=extend[low, high],
    )


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
