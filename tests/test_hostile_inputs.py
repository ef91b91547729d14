"""Hostile input that must fail cleanly or be drawn as it is: broken probe files get one plain
message (never advice to unpickle), and ids or names with matplotlib math syntax are literal text."""

from __future__ import annotations

import zipfile
from pathlib import Path

import matplotlib
import matplotlib.figure
import numpy as np
import pytest
import torch
import torch.nn as nn
from matplotlib.text import Text

import mlflow_xai
from mlflow_xai.artifacts import write_artifacts
from mlflow_xai.artifacts.viz import attribution_sheet
from mlflow_xai.cli import main
from mlflow_xai.config import ProbeConfig
from mlflow_xai.datasets import make_shapes
from mlflow_xai.errors import ProbeError
from mlflow_xai.probe import ProbeSet
from mlflow_xai.probe.loaders import load_probe

# --------------------------------------------------------------------------------------------------
# Broken probe files


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _broken(kind: str, folder: Path) -> Path:
    """A probe file that numpy cannot read as numbers, of the given kind."""
    x = np.random.default_rng(0).normal(size=(6, 3, 8, 8)).astype(np.float32)
    objects = np.array([{"a": 1}, [2]], dtype=object)
    if kind == "text.npz":
        (folder / "probe.npz").write_text("hello")
        return folder / "probe.npz"
    if kind == "empty.npz":
        (folder / "probe.npz").write_bytes(b"")
        return folder / "probe.npz"
    if kind == "truncated.npz":
        return _truncate(_write_npz(folder / "probe.npz", inputs=x))
    if kind == "truncated_compressed.npz":
        np.savez_compressed(folder / "probe.npz", inputs=x)
        return _truncate(folder / "probe.npz")
    if kind == "objects.npz":
        return _write_npz(folder / "probe.npz", inputs=objects)
    if kind == "object_labels.npz":
        return _write_npz(folder / "probe.npz", inputs=x[:2], labels=objects)
    if kind == "npy_named.npz":
        np.save(folder / "probe.npy", x)
        return (folder / "probe.npy").rename(folder / "probe.npz")
    if kind == "not_npy_member.npz":
        with zipfile.ZipFile(folder / "probe.npz", "w") as archive:
            archive.writestr("inputs.npy", "hello")
        return folder / "probe.npz"
    if kind == "text.npy":
        (folder / "probe.npy").write_text("hello")
        return folder / "probe.npy"
    if kind == "truncated.npy":
        np.save(folder / "probe.npy", x)
        return _truncate(folder / "probe.npy")
    if kind == "truncated_data.npy":
        np.save(folder / "probe.npy", x)
        data = (folder / "probe.npy").read_bytes()
        (folder / "probe.npy").write_bytes(data[: len(data) - 100])  # whole header, part of the data
        return folder / "probe.npy"
    if kind == "objects.npy":
        np.save(folder / "probe.npy", objects, allow_pickle=True)  # what a careless user may write
        return folder / "probe.npy"
    raise AssertionError(kind)


BROKEN = [
    "text.npz",
    "empty.npz",
    "truncated.npz",
    "truncated_compressed.npz",
    "objects.npz",
    "object_labels.npz",
    "npy_named.npz",
    "not_npy_member.npz",
    "text.npy",
    "truncated.npy",
    "truncated_data.npy",
    "objects.npy",
]


def _assert_plain_refusal(err: ProbeError, path: Path, kind: str) -> None:
    message = str(err)
    suffix = path.suffix
    assert "\n" not in message, message
    assert str(path) in message, message
    assert f"is not a readable {suffix} file" in message, message
    assert ("numpy.savez" if suffix == ".npz" else "numpy.save") in message, message
    assert "pickl" not in message.lower() and "unsafe" not in message.lower(), message
    if kind.startswith("object"):
        assert "holds Python objects" in message and "numeric" in message, message


@pytest.mark.parametrize("preprocess", [False, True], ids=["as_is", "preprocessed"])
@pytest.mark.parametrize("kind", BROKEN)
def test_broken_probe_file_gets_plain_message(tmp_path, kind, preprocess):
    path = _broken(kind, tmp_path)
    config = ProbeConfig.model_validate({"preprocess": {"scale": 1.0}}) if preprocess else None
    with pytest.raises(ProbeError) as err:
        load_probe(path, config)
    _assert_plain_refusal(err.value, path, kind)


@pytest.mark.parametrize("kind", ["text.npz", "truncated.npz", "objects.npz", "text.npy"])
def test_broken_probe_file_through_audit_and_cli(tmp_path, tracking_store, capsys, kind):
    path = _broken(kind, tmp_path)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    with pytest.raises(ProbeError) as err:
        mlflow_xai.audit(model, path, {"methods": {"integrated_gradients": {"n_steps": 4}}})
    _assert_plain_refusal(err.value, path, kind)

    # The CLI reads the probe set before it loads the model: the model is never reached.
    capsys.readouterr()
    code = main(["audit", "--model-uri", "models:/never-loaded", "--probe", str(path)])
    err_text = capsys.readouterr().err
    assert code == 2, err_text
    assert f"is not a readable {path.suffix} file" in err_text
    assert "pickl" not in err_text.lower()


def test_good_probe_files_still_load(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32)
    ids = np.array(["a", "b", "c", "d"])
    np.savez_compressed(tmp_path / "probe.npz", x=x, y=np.arange(4), ids=ids)
    np.save(tmp_path / "probe.npy", x)
    for path in (tmp_path / "probe.npz", tmp_path / "probe.npy"):
        for config in (None, ProbeConfig.model_validate({"preprocess": {"scale": 1.0}})):
            probe = load_probe(path, config)
            np.testing.assert_array_equal(np.asarray(probe.inputs), x)
    assert load_probe(tmp_path / "probe.npz").ids.tolist() == ids.tolist()


# --------------------------------------------------------------------------------------------------
# Ids and names with math syntax are drawn as plain text

HOSTILE_IDS = ["scan_$\\undefined$", "$\\alpha$", "50%_$x^2$", "a\\$b$c$", "$"]


@pytest.fixture
def drawn_texts(monkeypatch):
    """Every Text of every figure saved while the fixture is active: (string, parse_math)."""
    texts: list[tuple[str, bool]] = []
    savefig = matplotlib.figure.Figure.savefig

    def recording_savefig(fig, *args, **kwargs):
        result = savefig(fig, *args, **kwargs)  # drawn: tick labels exist now
        texts.extend((t.get_text(), t.get_parse_math()) for t in fig.findobj(Text) if t.get_text())
        return result

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
    return texts


def _assert_literal(texts: list[tuple[str, bool]], expected: list[str]) -> None:
    for text, parse_math in texts:
        assert not parse_math, f"{text!r} is parsed as math"
        assert "\\mathdefault" not in text, f"{text!r}: mathtext markup would show literally"
    drawn = "\n".join(text for text, _ in texts)
    for name in expected:
        assert name in drawn, f"{name!r} was not drawn"


def test_sheet_draws_dollar_ids_literally(tmp_path, drawn_texts):
    data = make_shapes(2, size=16, seed=1)
    attribution_sheet(
        data.images,
        np.random.default_rng(0).normal(size=data.images.shape),
        tmp_path / "sheet.png",
        title="$\\alpha$ method",
        captions=["$\\alpha$", "50%_$x^2$"],
    )
    assert (tmp_path / "sheet.png").is_file()
    _assert_literal(drawn_texts, ["$\\alpha$", "50%_$x^2$", "$\\alpha$ method"])


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 4)
    )


def test_audit_with_math_syntax_ids_writes_every_artifact(tmp_path, drawn_texts):
    data = make_shapes(6, size=16, seed=5)
    ids = np.array([*HOSTILE_IDS, "plain"])
    probe = ProbeSet(data.images, data.labels, data.masks, ids)
    config = {
        "batch_size": 8,
        "methods": {
            "integrated_gradients": {"n_steps": 4, "rule": "trapezoid"},
            "occlusion": {"sliding_window_shapes": [3, 4, 4], "strides": [3, 4, 4]},
        },
        "artifacts": {"sheet_samples": 6},
    }
    report = mlflow_xai.audit(_tiny_cnn(), probe, config)
    folder = write_artifacts(report, tmp_path / "xai")
    for name in ("integrated_gradients/sheet.png", "occlusion/sheet.png", "report.html", "summary.json"):
        assert (folder / name).is_file(), name
    for figure in ("ig_completeness_vs_steps", "ig_output_along_path", "ig_gradient_along_path"):
        assert (folder / "integrated_gradients" / f"{figure}.png").is_file()
    for plot in ("completeness_error_hist", "class_summary"):
        assert (folder / "plots" / f"{plot}.png").is_file(), plot
    _assert_literal(drawn_texts, HOSTILE_IDS)


def test_tabular_feature_names_with_math_syntax_are_literal(tmp_path, drawn_texts):
    x = np.random.default_rng(0).normal(size=(8, 4))
    names = ("$\\beta$", "r_$\\undefined$", "10%", "plain")
    model = nn.Linear(4, 2).double()
    report = mlflow_xai.audit(
        model, ProbeSet(x, feature_names=names), {"target": 1, "methods": {"integrated_gradients": {}}}
    )
    folder = write_artifacts(report, tmp_path / "xai")
    assert (folder / "integrated_gradients" / "feature_attributions.png").is_file()
    _assert_literal(drawn_texts, list(names))
