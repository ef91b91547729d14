"""Bad input gets one clear error, raised before any batch is attributed and before anything is
logged; and what the package reads or writes can never execute code or leave its folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import torch.nn as nn

from mlflow_xai.cli import main
from mlflow_xai.engine import BatchAttributor, audit
from mlflow_xai.errors import ConfigError, ModelError, ProbeError
from mlflow_xai.probe import ProbeSet

IG = {"integrated_gradients": {"n_steps": 4}}
FAST = {"methods": IG, "artifacts": {"sheet_samples": 0}}
PACKAGE = Path(__file__).parents[1] / "mlflow_xai"


class TinyCNN(nn.Module):
    """3 x 8 x 8 images, 3 classes; conv -> ReLU -> mean pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


class Detached(TinyCNN):
    def forward(self, x):
        return super().forward(x).detach()


class UnderNoGrad(TinyCNN):
    def forward(self, x):
        with torch.no_grad():
            return super().forward(x)


class OneHotOfArgmax(TinyCNN):
    """Floating-point scores, but rebuilt from an argmax: no gradient reaches the input."""

    def forward(self, x):
        return nn.functional.one_hot(super().forward(x).argmax(1), 3).float()


class Argmax(TinyCNN):
    def forward(self, x):
        return super().forward(x).argmax(1)


class TupleOut(TinyCNN):
    def forward(self, x):
        scores = super().forward(x)
        return scores[:, :1] * 0.0, scores


class DictOut(TinyCNN):
    def forward(self, x):
        scores = super().forward(x)
        return {"aux": scores[:, :1] * 0.0, "logits": scores}


def _images(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 8, 8)).astype(np.float32)


@pytest.fixture
def no_batch_may_run(monkeypatch):
    """Any batch attributed fails the test: the error under test must come first."""

    def run(self, *args, **kwargs):
        raise AssertionError("a probe batch was attributed before the input was refused")

    monkeypatch.setattr(BatchAttributor, "run", run)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


# --------------------------------------------------------------------------------------------------
# Probe sets


def _bad_probe(case: str) -> tuple[object, dict, dict]:
    x = _images()
    nan = x.copy()
    nan[2, 1, 3, 3] = np.nan
    inf = x.copy()
    inf[3, 0, 0, 0] = -np.inf
    label_cfg = {**FAST, "target": "label", "batch_size": 2}
    return {
        "channels": (x[:, :1], FAST, {}),
        "flat": (x.reshape(4, -1), FAST, {}),
        "nan": (nan, FAST, {}),
        "inf": (inf, FAST, {}),
        "uint8": ((x > 0).astype(np.uint8), FAST, {}),
        "int64": ((x > 0).astype(np.int64), FAST, {}),
        "uint8_dataset": (
            torch.utils.data.TensorDataset(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)),
            FAST,
            {},
        ),
        # The bad label is in the second batch: it must be refused before the first batch runs.
        "label_too_big": (x, label_cfg, {"labels": np.array([0, 1, 2, 3])}),
        "label_negative": (x, label_cfg, {"labels": np.array([0, 1, -1, 2])}),
        "fixed_target": (x, {**FAST, "target": 3}, {}),
        "float_labels": (x, label_cfg, {"labels": np.array([0.0, 1.0, 2.0, 1.0])}),
        "empty": (x[:0], FAST, {}),
        "empty_dataset": (torch.utils.data.TensorDataset(torch.zeros(0, 3, 8, 8)), FAST, {}),
    }[case]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("channels", "the model cannot take probe inputs of shape [1, 8, 8] (per sample)"),
        ("flat", "the model cannot take probe inputs of shape [192] (per sample)"),
        ("nan", "probe inputs contain NaN or Inf in 1 sample(s); all values must be finite"),
        ("inf", "probe inputs contain NaN or Inf in 1 sample(s); all values must be finite"),
        ("uint8", "probe inputs are uint8, but the model takes floating point"),
        ("int64", "probe inputs are int64, but the model takes floating point"),
        ("uint8_dataset", "probe inputs are uint8, but the model takes floating point"),
        (
            "label_too_big",
            "label 3 of probe sample '000003' is out of range: the model has 3 classes, so a class "
            "must be 0 to 2",
        ),
        (
            "label_negative",
            "label -1 of probe sample '000002' is out of range: the model has 3 classes, so a class must "
            "be 0 to 2",
        ),
        (
            "fixed_target",
            "target class 3 is out of range: the model has 3 classes, so a class must be 0 to 2",
        ),
        ("float_labels", "probe labels must be 4 integers (one per sample), got shape (4,) of float64"),
        ("empty", "the probe set is empty: it needs at least one sample"),
        ("empty_dataset", "the probe set is empty: it needs at least one sample"),
    ],
)
def test_bad_probe_is_refused_before_any_batch(no_batch_may_run, case, message):
    probe, config, extra = _bad_probe(case)
    with pytest.raises(ProbeError) as err:
        audit(TinyCNN(), probe, config, **extra)
    assert message in _one_line(err.value)


def test_integer_images_need_a_declared_scale_and_then_pass():
    raw = (np.random.default_rng(0).random((2, 3, 8, 8)) * 255).astype(np.uint8)
    report = audit(TinyCNN(), raw, {**FAST, "probe": {"preprocess": {"scale": 255}}})
    assert report.metrics()["xai/probe/samples"] == 2.0
    with pytest.raises(ProbeError, match=r"scale: 255"):
        audit(TinyCNN(), raw, FAST)


# --------------------------------------------------------------------------------------------------
# Models whose output gradient methods cannot differentiate

GRADIENT_METHODS = {
    "integrated_gradients": {"n_steps": 4},
    "integrated_gradients_auto": {"n_steps": "auto"},
    "saliency": {},
    "input_x_gradient": {},
    "gradient_shap": {"n_samples": 2},
    "deeplift": {},
    "deeplift_shap": {},
    "guided_backprop": {},
    "deconvolution": {},
    "layer_gradcam": {"layer": "conv"},
    "guided_gradcam": {"layer": "conv"},
    "noise_tunnel": {"method": "saliency", "nt_samples": 2},
}


def _methods(name: str) -> dict:
    return {name.removesuffix("_auto"): GRADIENT_METHODS[name]}


@pytest.mark.parametrize("model_class", [Detached, UnderNoGrad, OneHotOfArgmax])
@pytest.mark.parametrize("method", list(GRADIENT_METHODS))
def test_gradient_method_on_a_model_without_an_input_gradient(no_batch_may_run, model_class, method):
    with pytest.raises(ModelError) as err:
        audit(model_class(), _images(2), {"methods": _methods(method), "artifacts": {"sheet_samples": 0}})
    text = _one_line(err.value)
    name = method.removesuffix("_auto")
    assert text.startswith(f"method {name!r} needs gradients of the model's output with respect to its input")
    assert "not connected to the input in the autograd graph" in text
    assert "use a perturbation method (occlusion" in text


@pytest.mark.parametrize(
    "methods",
    [
        {"occlusion": {"sliding_window_shapes": [3, 4, 4], "strides": [3, 4, 4]}},
        {"feature_ablation": {"feature_mask": {"kind": "grid", "patch_size": 4}}},
    ],
)
def test_perturbation_methods_still_explain_a_detached_model(methods):
    report = audit(Detached(), _images(2), {"methods": methods, "artifacts": {"sheet_samples": 0}})
    (result,) = report.methods.values()
    assert np.isfinite(np.asarray(result.attributions, dtype=np.float64)).all()


@pytest.mark.parametrize("methods", [IG, {"occlusion": {}}, {"feature_ablation": {}}])
def test_integer_outputs_are_refused_for_every_method(no_batch_may_run, methods):
    with pytest.raises(ModelError) as err:
        audit(Argmax(), _images(2), {"methods": methods, "artifacts": {"sheet_samples": 0}})
    assert _one_line(err.value).startswith(
        "the model returned torch.int64 outputs of shape (1,), which cannot be differentiated"
    )
    assert "it must return floating-point class scores of shape (batch, classes)" in str(err.value)


# --------------------------------------------------------------------------------------------------
# Tuple and dict outputs: output_index / output_key


@pytest.mark.parametrize(
    ("model_class", "config", "error", "message"),
    [
        (TupleOut, {}, ModelError, "the model returned tuple of 2 items; set output_index in the config"),
        (DictOut, {}, ModelError, "the model returned dict with keys ['aux', 'logits']; set output_key"),
        (
            DictOut,
            {"output_key": "scores"},
            ModelError,
            "output_key 'scores' is not a key of the model's output",
        ),
        (
            TupleOut,
            {"output_index": 2},
            ModelError,
            "output_index 2 is out of range: the model returned a tuple",
        ),
        (
            TupleOut,
            {"output_key": "logits"},
            ModelError,
            "the model returned tuple of 2 items; set output_index",
        ),
        (TinyCNN, {"output_key": "logits"}, ModelError, "output_key is set, but the model returned a Tensor"),
        (TinyCNN, {"output_index": 0}, ModelError, "output_index is set, but the model returned a Tensor"),
        (TupleOut, {"output_index": -1}, ConfigError, "output_index must be an integer >= 0"),
        (DictOut, {"output_key": 1}, ConfigError, "invalid config: output_key must be a string, got 1"),
        (
            DictOut,
            {"output_key": "logits", "output_index": 1},
            ConfigError,
            "output_key (a dict key) and output_index (a tuple index) exclude each other",
        ),
    ],
)
def test_output_selector_errors(no_batch_may_run, model_class, config, error, message):
    with pytest.raises(error) as err:
        audit(model_class(), _images(2), {**FAST, **config})
    assert message in _one_line(err.value)


@pytest.mark.parametrize(
    ("model_class", "selector"), [(TupleOut, {"output_index": 1}), (DictOut, {"output_key": "logits"})]
)
@pytest.mark.parametrize("methods", [IG, {"deeplift": {}}, {"occlusion": {}}])
def test_selected_output_is_explained_like_the_plain_model(model_class, selector, methods):
    config = {"methods": methods, "artifacts": {"sheet_samples": 0}}
    plain = audit(TinyCNN(), _images(3), config)
    selected = audit(model_class(), _images(3), {**config, **selector})
    (name,) = plain.methods
    np.testing.assert_array_equal(selected.predictions, plain.predictions)
    np.testing.assert_allclose(
        np.asarray(selected.methods[name].attributions, np.float32),
        np.asarray(plain.methods[name].attributions, np.float32),
        rtol=1e-3,
        atol=1e-4,
    )


# --------------------------------------------------------------------------------------------------
# Training mode


class ModeRecorder(TinyCNN):
    """Records whether it was in training mode at every forward pass; has a dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training or self.drop.training)
        return self.drop(super().forward(x))


@pytest.mark.parametrize("fails", [False, True])
def test_a_model_in_training_mode_is_audited_in_eval_mode_and_restored(fails):
    model = ModeRecorder().train()
    model.fc.weight.requires_grad_(False)
    config = {**FAST, "target": "label"} if fails else FAST
    labels = np.array([0, 5]) if fails else None
    if fails:
        with pytest.raises(ProbeError, match="label 5 of probe sample .000001. is out of range"):
            audit(model, _images(2), config, labels=labels)
    else:
        audit(model, _images(2), config)
    assert model.modes and not any(model.modes)  # every forward pass ran in eval mode
    assert model.training and model.drop.training and model.conv.training
    assert model.conv.weight.requires_grad and not model.fc.weight.requires_grad


# --------------------------------------------------------------------------------------------------
# Layers and windows that do not fit: refused before the first batch


@pytest.mark.parametrize(
    ("methods", "error", "message"),
    [
        (
            {"layer_gradcam": {"layer": "features.conv9"}},
            ModelError,
            "methods.layer_gradcam.layer 'features.conv9' is not a module of the model; "
            "valid names include: conv, relu, pool, fc",
        ),
        (
            {"guided_gradcam": {"layer": "nope"}},
            ModelError,
            "methods.guided_gradcam.layer 'nope' is not a module of the model; valid names include: conv",
        ),
        (
            {"layer_gradcam": {"layer": "fc"}},
            ModelError,
            "methods.layer_gradcam.layer 'fc' gives a map of shape [1, 1] for inputs of shape [1, 3, 8, 8]",
        ),
        (
            {"occlusion": {"sliding_window_shapes": [3, 16, 16], "strides": [3, 4, 4]}},
            ProbeError,
            "methods.occlusion.sliding_window_shapes [3, 16, 16] is larger than the input [3, 8, 8] on "
            "some axis; every window entry must be <= the input's",
        ),
        (
            {"occlusion": {"sliding_window_shapes": [4, 4], "strides": [4, 4]}},
            ProbeError,
            "methods.occlusion.sliding_window_shapes [4, 4] has 2 entries but each input has shape [3, 8, 8]",
        ),
    ],
)
def test_layer_or_window_that_does_not_fit(no_batch_may_run, methods, error, message):
    # Integrated Gradients comes first: it must not run a batch before the second method is refused.
    config = {"methods": {**IG, **methods}, "artifacts": {"sheet_samples": 0}, "batch_size": 1}
    with pytest.raises(error) as err:
        audit(TinyCNN(), _images(3), config)
    assert message in _one_line(err.value)


def test_a_missing_layer_is_refused_when_the_attributor_is_built():
    from mlflow_xai.config import load_config

    with pytest.raises(ModelError, match="layer 'nope' is not a module of the model"):
        BatchAttributor(TinyCNN(), load_config({"methods": {"layer_gradcam": {"layer": "nope"}}}))


# --------------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([1, 2], "config must be a path to a YAML file or a mapping, got list"),
        ({"sed": 1}, "invalid config: unknown key 'sed'; valid keys: artifacts, batch_size"),
        (
            {"methods": {"integrated_gradient": {}}},
            "unknown key 'integrated_gradient' in methods; valid keys:",
        ),
        ({"batch_size": "8"}, 'invalid config: batch_size must be an integer >= 1, got "8"'),
        ({"batch_size": 0}, "invalid config: batch_size must be an integer >= 1, got 0"),
        ({"target": -1}, "invalid config: target: must be"),
        (
            {"methods": {"integrated_gradients": {"n_steps": 0}}},
            "methods.integrated_gradients.n_steps must be",
        ),
        ({"methods": {}}, "methods must enable at least one method"),
        ({"methods": {"os.system": {}}}, "unknown key 'os.system' in methods"),
        (
            {"methods": {"noise_tunnel": {"method": "os.system"}}},
            "methods.noise_tunnel.method must be one of",
        ),
    ],
)
def test_bad_config_mapping(no_batch_may_run, config, message):
    with pytest.raises(ConfigError) as err:
        audit(TinyCNN(), _images(2), config)
    assert message in _one_line(err.value)


@pytest.mark.parametrize(
    "text",
    [
        "seed: !!python/object/apply:os.mkdir [{marker}]\n",
        "seed: !!python/object/new:os.mkdir [{marker}]\n",
        "seed: !!python/name:os.system\n",
        "!!python/object/apply:os.mkdir [{marker}]\n",
    ],
)
def test_yaml_never_constructs_python_objects(tmp_path, no_batch_may_run, text):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.yaml"
    path.write_text(text.format(marker=str(marker)))
    with pytest.raises(ConfigError) as err:
        audit(TinyCNN(), _images(2), path)
    assert _one_line(err.value).startswith(f"config file {str(path)!r} is not valid YAML: ")
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# The CLI: one line, exit 2, no run logged


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A tracking store with small models logged, a probe file and configs."""
    root = tmp_path_factory.mktemp("cli")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        uris = {}
        for name, model in [("cnn", TinyCNN()), ("detached", Detached()), ("dict", DictOut())]:
            with mlflow.start_run():
                info = mlflow.pytorch.log_model(
                    model, name="model", serialization_format="pickle", pip_requirements=[]
                )
            uris[name] = info.model_uri
        from sklearn.linear_model import LogisticRegression

        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                LogisticRegression().fit(np.random.rand(10, 3), np.arange(10) % 2),
                name="model",
                pip_requirements=["scikit-learn"],
            )
        uris["sklearn"] = info.model_uri
        x = _images()
        np.savez(root / "probe.npz", inputs=x, labels=np.array([0, 1, 2, 1]))
        np.savez(root / "bad_labels.npz", inputs=x, labels=np.array([0, 1, 2, 7]))
        np.savez(root / "gray.npz", inputs=x[:, :1])
        np.savez(root / "nan.npz", inputs=np.where(x > 1, np.nan, x))
        np.savez(root / "uint8.npz", inputs=(x > 0).astype(np.uint8))
        np.savez(root / "empty.npz", inputs=x[:0])
        yield root, uris, mp
        mlflow.set_tracking_uri(None)


def _run_count() -> int:
    return len(mlflow.search_runs(search_all_experiments=True, output_format="list"))


@pytest.mark.parametrize(
    ("model", "probe", "config", "message"),
    [
        ("cnn", "gray.npz", "", "the model cannot take probe inputs of shape [1, 8, 8] (per sample)"),
        ("cnn", "nan.npz", "", "probe inputs contain NaN or Inf in"),
        ("cnn", "uint8.npz", "", "probe inputs must be floating point in the model's input space, got uint8"),
        ("cnn", "empty.npz", "", "the probe set is empty"),
        (
            "cnn",
            "bad_labels.npz",
            "target: label\n",
            "label 7 of probe sample '000003' is out of range: the model has 3 classes",
        ),
        ("cnn", "missing.npz", "", "probe file"),
        ("cnn", "missing_folder", "", "does not exist"),
        ("sklearn", "probe.npz", "", "is not a PyTorch model (its flavors: python_function, sklearn)"),
        ("models:/m-0123456789abcdef", "probe.npz", "", "cannot load model 'models:/m-0123456789abcdef'"),
        ("detached", "probe.npz", "", "method 'integrated_gradients' needs gradients of the model's output"),
        ("dict", "probe.npz", "", "the model returned dict with keys ['aux', 'logits']; set output_key"),
        ("cnn", "probe.npz", "methods:\n  layer_gradcam:\n    layer: nope\n", "layer 'nope' is not a module"),
        (
            "cnn",
            "probe.npz",
            "methods:\n  occlusion:\n    sliding_window_shapes: [3, 16, 16]\n    strides: [3, 4, 4]\n",
            "sliding_window_shapes [3, 16, 16] is larger than the input [3, 8, 8]",
        ),
        ("cnn", "probe.npz", "- 1\n- 2\n", "config must be a mapping of keys to values, got list"),
        ("cnn", "probe.npz", "sed: 1\n", "unknown key 'sed'; valid keys: "),
        ("cnn", "probe.npz", "batch_size: '8'\n", 'batch_size must be an integer >= 1, got "8"'),
        ("cnn", "probe.npz", "batch_size: 0\n", "batch_size must be an integer >= 1, got 0"),
        ("cnn", "probe.npz", "seed: !!python/object/apply:os.getcwd []\n", "is not valid YAML"),
        ("cnn", "probe.npz", None, "config file"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line_and_logs_nothing(logged, capsys, model, probe, config, message):
    root, uris, _ = logged
    methods = "methods:\n  integrated_gradients:\n    n_steps: 4\n"
    if config is None:
        config_path = root / "missing.yaml"
    else:
        config_path = root / "c.yaml"
        text = config if config.startswith("- ") or "methods:" in config else config + methods
        config_path.write_text(text)
    before = _run_count()
    capsys.readouterr()
    code = main(
        [
            "audit",
            "--model-uri",
            uris.get(model, model),
            "--probe",
            str(root / probe),
            "--config",
            str(config_path),
            "--cache-dir",
            str(root / "cache"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlflow-xai: error: "), err
    assert message in lines[0]
    assert _run_count() == before  # nothing logged, not even a FAILED run


def test_cli_output_key_audits_a_dict_model(logged, capsys):
    root, uris, _ = logged
    config = root / "key.yaml"
    config.write_text("output_key: logits\nmethods:\n  integrated_gradients:\n    n_steps: 4\n")
    before = _run_count()
    code = main(
        [
            "audit",
            "--model-uri",
            uris["dict"],
            "--probe",
            str(root / "probe.npz"),
            "--config",
            str(config),
            "--cache-dir",
            str(root / "cache"),
            "--quiet",
        ]
    )
    assert code in (0, 1), capsys.readouterr().err
    assert _run_count() == before + 1


# --------------------------------------------------------------------------------------------------
# Security: no unpickling, no path escape, escaped HTML


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("kind", ["npy", "npz_inputs", "npz_labels", "npz_inputs_preprocessed", "baseline"])
def test_pickled_arrays_are_refused_not_loaded(tmp_path, no_batch_may_run, kind):
    marker = tmp_path / "unpickled"
    objects = np.array([_Payload(marker), _Payload(marker)], dtype=object)
    x = _images(2)
    config: dict = FAST
    if kind == "npy":
        path = tmp_path / "probe.npy"
        np.save(path, objects, allow_pickle=True)
        expected, message = ProbeError, "is not a plain numeric .npy array"
    elif kind == "baseline":
        path = tmp_path / "probe.npz"
        np.savez(path, inputs=x)
        baseline = tmp_path / "baseline.npy"
        np.save(baseline, objects, allow_pickle=True)
        config = {
            **FAST,
            "methods": {"integrated_gradients": {"baseline": {"kind": "file", "path": str(baseline)}}},
        }
        expected, message = ConfigError, "is not a readable .npy array"
    else:
        path = tmp_path / "probe.npz"
        arrays = {"inputs": objects} if "inputs" in kind else {"inputs": x, "labels": objects}
        np.savez(path, **arrays)
        if kind.endswith("preprocessed"):
            config = {**FAST, "probe": {"preprocess": {"scale": 1.0}}}
        member = "inputs" if "inputs" in kind else "labels"
        expected, message = ProbeError, f"array {member!r} holds Python objects, not numbers"
    with pytest.raises(expected) as err:
        audit(TinyCNN(), path, config)
    assert message in _one_line(err.value)
    assert not marker.exists()


def _calls(text: str, name: str) -> list[str]:
    """The argument text of every call of ``name`` in ``text`` (parentheses balanced)."""
    calls = []
    for match in re.finditer(re.escape(name) + r"\(", text):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        calls.append(text[match.end() : end - 1])
    return calls


def test_package_never_unpickles():
    """Every np.load refuses pickles; torch.load, pickle and yaml's full loaders are not used."""
    files = list(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        text = path.read_text(encoding="utf-8")
        for call in _calls(text, "np.load"):
            assert "allow_pickle=False" in call, f"{path.name}: np.load({call})"
        assert "allow_pickle=True" not in text, path.name
        for call in _calls(text, "torch.load"):
            assert "weights_only=True" in call, f"{path.name}: torch.load({call})"
        imports = r"^\s*(import|from) (pickle|dill|cloudpickle|joblib)\b"
        assert not re.search(imports, text, re.M), path.name
        assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(", text), path.name
        assert not re.search(r"(?<![.\w])(eval|exec)\(", text), path.name


HOSTILE_IDS = [
    "<img src=x onerror=alert(1)>",
    "../../escaped",
    "/tmp/absolute",
    "a/../../b",
    "<script>alert('id')</script>",
    '"quoted" & <b>',
]


@pytest.fixture
def hostile_report():
    x = _images(len(HOSTILE_IDS), seed=2)
    probe = ProbeSet(x, np.array([0, 1, 2, 0, 1, 2]), ids=np.array(HOSTILE_IDS))
    config = {"methods": {"integrated_gradients": {"n_steps": 2}}, "artifacts": {"sheet_samples": 6}}
    return audit(TinyCNN(), probe, config)


def _files_under(root: Path) -> set[Path]:
    return {p.resolve() for p in root.rglob("*")}


def test_hostile_ids_stay_inside_the_artifact_folder_and_are_escaped(tmp_path, hostile_report):
    from mlflow_xai.artifacts import write_artifacts

    folder = tmp_path / "xai"
    before = _files_under(tmp_path)
    write_artifacts(hostile_report, folder)
    created = _files_under(tmp_path) - before
    assert created and all(p.is_relative_to(folder.resolve()) for p in created), created
    assert not Path("/tmp/absolute").exists()
    html = (folder / "report.html").read_text(encoding="utf-8")
    for raw in HOSTILE_IDS:
        if any(c in raw for c in '<>&"'):
            assert raw not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # the id is shown, escaped
    assert "<script" not in html.lower() and "onerror=alert" not in html.replace("&lt;img src=x onerror", "")


def test_hostile_feature_names_and_class_folders_are_escaped(tmp_path):
    from PIL import Image

    from mlflow_xai.artifacts import write_artifacts

    hostile = "<svg onload=alert(1)>"
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    model = nn.Sequential(nn.Linear(3, 2))
    report = audit(
        model, x, {"methods": IG, "artifacts": {"sheet_samples": 2}}, feature_names=[hostile, "../up", "ok"]
    )
    write_artifacts(report, tmp_path / "tab")
    html = (tmp_path / "tab" / "report.html").read_text(encoding="utf-8")
    assert hostile not in html
    assert {p.name for p in (tmp_path / "tab").iterdir()} >= {"integrated_gradients", "report.html"}
    assert not (tmp_path / "up").exists()

    images = tmp_path / "images"
    for name in (hostile, "cat"):
        (images / name).mkdir(parents=True)
        pixels = np.random.default_rng(len(name)).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / name / "a<b>.png")
    report = audit(
        TinyCNN(),
        images,
        {"methods": IG, "artifacts": {"sheet_samples": 2}, "probe": {"preprocess": {"scale": 255}}},
    )
    assert hostile + "/a<b>.png" in report.probe.ids.tolist()
    write_artifacts(report, tmp_path / "img")
    html = (tmp_path / "img" / "report.html").read_text(encoding="utf-8")
    assert hostile not in html and "a<b>" not in html
    assert "&lt;svg onload=alert(1)&gt;/a&lt;b&gt;.png" in html


def test_batch_cache_files_are_named_by_position_only(tmp_path):
    probe = ProbeSet(_images(2), ids=np.array(["../../x", "<y>"]))
    audit(TinyCNN(), probe, {**FAST, "batch_size": 1}, cache_dir=tmp_path / "cache")
    names = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert names == ["batch-000000000.npz", "batch-000000001.npz"]
    assert {p.name for p in tmp_path.iterdir()} == {"cache"}
