"""What a sheet shows, with answers known on paper: the input as the user sees it (the probe's
normalisation undone, the same colours in every row) and Captum's visualisation methods and signs.

The drawn pixels are read back from the figures themselves: every ``savefig`` is watched and each
image axes' data (``ax.images[k].get_array()``) is compared with what the image must be.
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml
from matplotlib.figure import Figure

import mlflow_xai.artifacts.viz as viz
from mlflow_xai.artifacts import write_artifacts
from mlflow_xai.config import dump_config, load_config
from mlflow_xai.engine import audit
from mlflow_xai.errors import ConfigError
from mlflow_xai.probe import ProbeSet

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
GREY = 0.5
PIXEL = 1 / 255  # one step of an 8-bit colour: "the same colour" on screen
COLUMNS = ("original_image", "heat_map", "blended_heat_map", "masked_image", "alpha_scaling")
CMAPS = {"all": "RdBu_r", "positive": "Greens", "negative": "Reds", "absolute_value": "Blues"}
IG = {"integrated_gradients": {"n_steps": 4, "rule": "trapezoid"}}


@pytest.fixture
def drawn(monkeypatch):
    """Every figure saved during the test, by the path it was saved to."""
    figures: dict[str, Figure] = {}
    savefig = Figure.savefig

    def keep(self, fname, *args, **kwargs):
        figures[str(fname)] = self
        return savefig(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def _grid(fig: Figure, columns: int) -> list[list]:
    """The sheet's image axes, row by row (colour bars hold no image and are left out)."""
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) % columns == 0, f"{len(panels)} image panels do not fill rows of {columns}"
    return [panels[start : start + columns] for start in range(0, len(panels), columns)]


def _pixels(ax, k: int = 0) -> np.ndarray:
    return np.asarray(ax.images[k].get_array(), dtype=np.float64)


def _cnn(channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(64, 4)
    )


def _grey_with_squares(colours: list[tuple[float, ...]], size: int = 16) -> np.ndarray:
    """Raw images in [0, 1]: a uniform grey background and, in sample i, a square of ``colours[i]``."""
    channels = len(colours[0])
    raw = np.full((len(colours), channels, size, size), GREY, dtype=np.float32)
    for i, colour in enumerate(colours):
        top = 2 + 2 * i
        raw[i, :, top : top + 5, 3:9] = np.asarray(colour, dtype=np.float32)[:, None, None]
    return raw


def _hwc(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) as the eye sees it (a grey image is its value in all three channels)."""
    hwc = np.moveaxis(image.astype(np.float64), 0, -1)
    return np.repeat(hwc, 3, axis=-1) if hwc.shape[-1] == 1 else hwc


def _normalised(raw: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    return ((raw - m) / s).astype(np.float32)


def _originals_of(figures: dict[str, Figure], report, folder: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(drawn input, raw sample it shows) for every row of every sheet of the audit."""
    pairs = []
    k = min(report.config.artifacts.sheet_samples, len(report.probe))
    for name, result in report.methods.items():
        rows = {"sheet.png": np.arange(k), "worst.png": result.worst_indices(k)}
        for sheet, samples in rows.items():
            fig = figures.get(str(folder / name / sheet))
            if fig is None:
                assert sheet == "worst.png", f"{name}/{sheet} was not drawn"
                continue
            grid = _grid(fig, len(getattr(report.config.artifacts, "sheet_columns", COLUMNS[:3])))
            assert len(grid) == len(samples)
            pairs += [(_pixels(row[0]), int(i)) for row, i in zip(grid, samples, strict=True)]
    return pairs


# --------------------------------------------------------------------------------------------------
# The input as the user sees it


def test_imagenet_normalised_probe_shows_its_grey_in_every_row(tmp_path, drawn):
    """The tutorial's preprocessing: every row shows the raw grey (0.5, 0.5, 0.5) and square colour."""
    colours = [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.9, 0.9, 0.2), (0.1, 0.6, 0.3)]
    raw = _grey_with_squares(colours)
    config = {
        "methods": IG,
        "probe": {"preprocess": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}},
        "artifacts": {"sheet_samples": 4},
    }
    report = audit(_cnn(), raw, config)
    assert report.probe.inputs.min() < 0.0  # the model saw normalised inputs
    folder = write_artifacts(report, tmp_path)
    pairs = _originals_of(drawn, report, folder)
    assert len(pairs) >= 4
    for image, i in pairs:
        assert image.shape == (16, 16, 3)
        np.testing.assert_allclose(image[0, 0], [GREY] * 3, atol=PIXEL)  # the background
        np.testing.assert_allclose(image, _hwc(raw[i]), atol=PIXEL)  # and the square, in its colour


def test_display_setting_undoes_a_normalisation_made_outside(tmp_path, drawn):
    """A ProbeSet normalised by the user's own code: ``artifacts.display`` gives its mean and std."""
    raw = _grey_with_squares([(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.2, 0.2, 0.9)])
    probe = ProbeSet(_normalised(raw, IMAGENET_MEAN, IMAGENET_STD))
    config = {
        "methods": IG,
        "artifacts": {"sheet_samples": 3, "display": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}},
    }
    report = audit(_cnn(), probe, config)
    folder = write_artifacts(report, tmp_path)
    for image, i in _originals_of(drawn, report, folder):
        np.testing.assert_allclose(image, _hwc(raw[i]), atol=PIXEL)
    # The logged config keeps the setting and loads back to it.
    logged = load_config(yaml.safe_load(dump_config(report.config)))
    assert logged.artifacts.display == report.config.artifacts.display


def test_minmax_display_is_one_stretch_for_the_whole_probe_set(tmp_path, drawn, caplog):
    """Inputs in [-1, 3] over the probe set: every row shows (x + 1) / 4, a narrow row is not stretched."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 2.0, size=(3, 3, 16, 16)).astype(np.float32)
    x[0, 0, 0, 0], x[0, 1, 0, 1] = -1.0, 3.0  # the probe's extremes, both in sample 0
    for display in ("minmax", None):  # None: the default, which falls back to the same stretch
        artifacts = {"sheet_samples": 3} if display is None else {"sheet_samples": 3, "display": display}
        report = audit(_cnn(), ProbeSet(x), {"methods": IG, "artifacts": artifacts})
        folder = write_artifacts(report, tmp_path / str(display))
        fig = drawn[str(folder / "integrated_gradients" / "sheet.png")]
        for row, sample in zip(_grid(fig, 3), x, strict=True):
            np.testing.assert_allclose(_pixels(row[0]), _hwc((sample + 1.0) / 4.0), atol=1e-6)
        assert "min-max" in fig.get_suptitle()  # the sheet says how its input is shown
    # Falling back to it by default is said in the log too, with what to set instead.
    assert any("set artifacts.display" in r.getMessage() for r in caplog.records)


def test_display_none_shows_inputs_as_they_are(tmp_path, drawn):
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, 1.5, size=(2, 3, 16, 16)).astype(np.float32)
    config = {"methods": IG, "artifacts": {"sheet_samples": 2, "display": "none"}}
    folder = write_artifacts(audit(_cnn(), ProbeSet(x), config), tmp_path)
    fig = drawn[str(folder / "integrated_gradients" / "sheet.png")]
    for row, sample in zip(_grid(fig, 3), x, strict=True):
        np.testing.assert_allclose(_pixels(row[0]), np.clip(_hwc(sample), 0.0, 1.0), atol=1e-6)


def test_grayscale_probe_is_drawn_in_its_own_greys(tmp_path, drawn):
    raw = _grey_with_squares([(0.8,), (0.1,), (0.5,)])  # the last one is grey on grey
    config = {
        "methods": IG,
        "probe": {"preprocess": {"mean": [0.5], "std": [0.25]}},
        "artifacts": {"sheet_samples": 3},
    }
    report = audit(_cnn(channels=1), raw, config)
    folder = write_artifacts(report, tmp_path)
    for image, i in _originals_of(drawn, report, folder):
        np.testing.assert_allclose(image, _hwc(raw[i]), atol=PIXEL)


def test_display_must_fit_the_probe_channels(tmp_path):
    x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    config = {"methods": IG, "artifacts": {"display": {"mean": [0.5, 0.5], "std": [0.2, 0.2]}}}
    # Found with the probe, before any compute, not after every method has run.
    with pytest.raises(ConfigError, match=r"artifacts\.display has 2 values per channel.*3 channels"):
        audit(_cnn(), ProbeSet(x), config)
    report = audit(_cnn(), ProbeSet(x), {"methods": IG})
    wrong = report.config.model_copy(
        update={
            "artifacts": report.config.artifacts.model_copy(
                update={"display": {"mean": [0.5, 0.5], "std": [0.2, 0.2]}}
            )
        }
    )
    report.config = wrong
    with pytest.raises(ConfigError, match=r"artifacts\.display has 2 values per channel.*3 channels"):
        write_artifacts(report, tmp_path)  # the writer checks too, for a report built elsewhere


# --------------------------------------------------------------------------------------------------
# Signs and the outlier percentile, on a known signed map


def _signed_map(seed: int = 0) -> np.ndarray:
    """A 20 x 20 map whose Captum scale (``outlier_perc`` 2) is 1 in every sign mode.

    positive part: 100 x 1, 50 x 0.5, one 2; the total is 127 and 98% of it (124.46) is first reached
    by the sorted cumulative sum at the last 1 (25 + 100 = 125; one fewer gives 124), so the scale
    is 1 and the 2 saturates. negative part: 100 x -1, 50 x -0.5, one -2.5 (total 127.5, 98% =
    124.95, reached at 125): scale 1. Both (all, absolute_value): 250 + 2 + 2.5 = 254.5, 98% =
    249.41, reached at 50 + 200 = 250: scale 1, and 2 and -2.5 saturate.
    """
    values = [1.0] * 100 + [0.5] * 50 + [2.0] + [-1.0] * 100 + [-0.5] * 50 + [-2.5] + [0.0] * 98
    return np.random.default_rng(seed).permutation(np.array(values)).reshape(20, 20)


def _attribution(signed: np.ndarray) -> np.ndarray:
    """Three channels that sum to ``signed`` exactly (the sheets show the channel sum)."""
    return np.stack([2.0 * signed, -signed, np.zeros_like(signed)])


def _on_paper(signed: np.ndarray, sign: str, bound: float) -> np.ndarray:
    """Captum's normalised map: the sign's part over the scale, clipped to [-1, 1]."""
    part = {
        "all": signed,
        "positive": np.maximum(signed, 0.0),
        "negative": np.maximum(-signed, 0.0),  # Captum: min(a, 0) / -scale, a magnitude
        "absolute_value": np.abs(signed),
    }[sign]
    return np.clip(part / bound, -1.0, 1.0)


@pytest.mark.parametrize("sign", ["all", "positive", "negative", "absolute_value"])
def test_each_sign_is_scaled_by_the_outlier_percentile(sign, tmp_path, drawn):
    signed = _signed_map()
    image = np.random.default_rng(3).random((1, 3, 20, 20))
    path = viz.attribution_sheet(
        image, _attribution(signed)[None], tmp_path / "s.png", title="t", captions=["c"], sign=sign
    )
    (ax_input, ax_heat, ax_blend) = _grid(drawn[str(path)], 3)[0]
    np.testing.assert_allclose(_pixels(ax_input), _hwc(image[0]))
    norm = _on_paper(signed, sign, bound=1.0)
    expected = matplotlib.colormaps[CMAPS[sign]]((norm + 1.0) / 2.0 if sign == "all" else norm)
    np.testing.assert_allclose(_pixels(ax_heat), expected, atol=1e-12)
    # The overlay: the input in grey, and the same map on the same scale.
    np.testing.assert_allclose(_pixels(ax_blend, 0), _hwc(image[0]).mean(axis=-1))
    assert ax_blend.images[0].get_clim() == (0.0, 1.0)
    assert ax_blend.images[1].get_clim() == ((-1.0, 1.0) if sign == "all" else (0.0, 1.0))


@pytest.mark.parametrize(
    ("sign", "largest"), [("all", 2.5), ("positive", 2.0), ("negative", 2.5), ("absolute_value", 2.5)]
)
def test_outlier_perc_zero_scales_to_the_largest_value(sign, largest, tmp_path, drawn):
    signed = _signed_map()
    path = viz.attribution_sheet(
        np.full((1, 3, 20, 20), GREY),
        _attribution(signed)[None],
        tmp_path / "s.png",
        title="t",
        captions=["c"],
        sign=sign,
        outlier_perc=0.0,
    )
    heat = _pixels(_grid(drawn[str(path)], 3)[0][1])
    norm = _on_paper(signed, sign, bound=largest)
    expected = matplotlib.colormaps[CMAPS[sign]]((norm + 1.0) / 2.0 if sign == "all" else norm)
    np.testing.assert_allclose(heat, expected, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# masked_image and alpha_scaling


@pytest.mark.parametrize("sign", ["positive", "negative", "absolute_value"])
def test_masked_image_and_alpha_scaling_on_paper(sign, tmp_path, drawn):
    """A left-half map (1 in columns 0-1, 0.5 in 2-3, 0 on the right) over a (0.2, 0.4, 0.6) image.

    Its scale is 1 (16 x 0.5 + 16 x 1 = 24; 98% = 23.52 is reached only at the last 1), so the
    normalised map is the map itself: the masked image is the colour, half of it, then black; the
    alpha-scaled image is the colour with opacity 1, 0.5, then 0.
    """
    colour = np.array([0.2, 0.4, 0.6])
    raw = np.broadcast_to(colour[:, None, None], (3, 8, 8)).astype(np.float32)
    left = np.zeros((8, 8))
    left[:, :2], left[:, 2:4] = 1.0, 0.5
    attribution = (-left if sign == "negative" else left)[None].repeat(3, axis=0) / 3.0
    display = viz.ImageDisplay.unnormalize(IMAGENET_MEAN, IMAGENET_STD, source="test")
    path = viz.attribution_sheet(
        _normalised(raw, IMAGENET_MEAN, IMAGENET_STD)[None],
        attribution[None],
        tmp_path / "s.png",
        title="t",
        captions=["c"],
        sign=sign,
        columns=["original_image", "masked_image", "alpha_scaling"],
        display=display,
    )
    (ax_input, ax_masked, ax_alpha) = _grid(drawn[str(path)], 3)[0]
    shown = np.broadcast_to(colour, (8, 8, 3))
    np.testing.assert_allclose(_pixels(ax_input), shown, atol=PIXEL)
    weight = np.array([1.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(_pixels(ax_masked), shown * weight[None, :, None], atol=PIXEL)
    alpha = _pixels(ax_alpha)
    np.testing.assert_allclose(alpha[..., :3], shown, atol=PIXEL)
    np.testing.assert_allclose(alpha[..., 3], np.broadcast_to(weight, (8, 8)), atol=1e-9)


def test_sheet_columns_reach_the_sheets(tmp_path, drawn):
    """Configured columns, in order, in every row: the alpha image's colours are the input's and the
    masked image is the input times the alpha-scaled image's opacity."""
    x = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
    columns = ["alpha_scaling", "original_image", "masked_image", "heat_map"]
    artifacts = {"sheet_samples": 3, "sign": "absolute_value", "sheet_columns": columns}
    folder = write_artifacts(audit(_cnn(), ProbeSet(x), {"methods": IG, "artifacts": artifacts}), tmp_path)
    grid = _grid(drawn[str(folder / "integrated_gradients" / "sheet.png")], len(columns))
    assert len(grid) == 3
    for (ax_alpha, ax_input, ax_masked, ax_heat), sample in zip(grid, x, strict=True):
        image, alpha = _pixels(ax_input), _pixels(ax_alpha)
        np.testing.assert_allclose(image, _hwc(sample), atol=1e-6)
        np.testing.assert_allclose(alpha[..., :3], image)
        assert alpha[..., 3].max() == pytest.approx(1.0) and alpha[..., 3].min() >= 0.0
        np.testing.assert_allclose(_pixels(ax_masked), image * alpha[..., 3:], atol=1e-12)
        assert _pixels(ax_heat).shape == (16, 16, 4)
    titles = [ax.get_title() for ax in grid[0]]
    assert titles[1] == "input" and all(titles)


# --------------------------------------------------------------------------------------------------
# Configuration


def test_unknown_column_is_one_config_error_listing_the_allowed():
    with pytest.raises(ConfigError) as caught:
        load_config({"artifacts": {"sheet_columns": ["original_image", "heatmap"]}})
    message = str(caught.value)
    assert message.count("artifacts.sheet_columns") == 1 and "heatmap" in message
    assert all(column in message for column in COLUMNS)


@pytest.mark.parametrize(
    ("artifacts", "problem"),
    [
        ({"sheet_columns": []}, "artifacts.sheet_columns"),
        ({"sheet_columns": ["masked_image"]}, "sign 'all'"),
        ({"sheet_columns": ["heat_map", "alpha_scaling"], "sign": "all"}, "sign 'all'"),
        ({"display": "minmx"}, "artifacts.display.*'auto', 'none', 'minmax'"),
        ({"display": {"mean": [0.5, 0.5]}}, "artifacts.display.*mean and std"),
        ({"display": {"mean": [0.5], "std": [0.2], "scale": 255}}, "artifacts.display.*scale"),
        ({"display": {"mean": [0.5, 0.5], "std": [0.2]}}, "artifacts.display.*one of each per channel"),
        ({"display": {"mean": [0.5], "std": [0.0]}}, "artifacts.display.*std"),
        ({"display": {"mean": ["a"], "std": [1.0]}}, "artifacts.display.*number"),
        ({"outlier_perc": 100}, "artifacts.outlier_perc"),
        ({"outlier_perc": -1}, "artifacts.outlier_perc"),
    ],
)
def test_config_refuses_bad_display_options(artifacts, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config({"artifacts": artifacts})


def test_display_defaults_are_captums():
    artifacts = load_config({}).artifacts
    assert artifacts.sheet_columns == ["original_image", "heat_map", "blended_heat_map"]
    assert artifacts.display == "auto" and artifacts.outlier_perc == 2.0
    ok = load_config({"artifacts": {"sheet_columns": ["masked_image"], "sign": "positive"}})
    assert ok.artifacts.sheet_columns == ["masked_image"]


def test_tabular_probe_with_display_settings_still_writes_its_bar_chart(tmp_path):
    x = np.random.default_rng(0).normal(size=(12, 5))
    model = nn.Linear(5, 2).double()
    config = {
        "target": 1,
        "methods": {"integrated_gradients": {"n_steps": 4}},
        "artifacts": {
            "sheet_columns": ["original_image", "masked_image"],
            "sign": "positive",
            "display": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},  # images only: not applied
            "outlier_perc": 5,
        },
    }
    folder = write_artifacts(audit(model, ProbeSet(x), config), tmp_path)
    method = folder / "integrated_gradients"
    assert (method / "feature_attributions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (method / "sheet.png").exists()
    with open(method / "feature_attributions.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 5
