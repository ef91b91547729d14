"""Several targets in one audit: ``target: [208, 283]``, ``predicted``, ``label`` and ``{top: k}``, each
with its own masks, metrics and sheets; occlusion shares its forward passes across targets."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from captum.attr import Occlusion as CaptumOcclusion

from mlflow_xai.artifacts import write_artifacts
from mlflow_xai.artifacts.write import _caption, _target_title
from mlflow_xai.attribution.methods import build
from mlflow_xai.ci import check_gate_config, judge
from mlflow_xai.cli.console import summary_table
from mlflow_xai.config import load_config
from mlflow_xai.engine import audit, resolve_targets
from mlflow_xai.errors import ConfigError, ProbeError
from mlflow_xai.model import ModelHandle
from mlflow_xai.report import metric_catalogue

CLASSES = 5


def _linear_model(features: int = 6) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(features, CLASSES)).double().eval()


def _rows(n: int = 6, features: int = 6) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, features))


# --------------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize(
    ("target", "slots"),
    [
        ("predicted", ["predicted"]),
        (3, ["class_3"]),
        ([208, 283], ["class_208", "class_283"]),
        (["label", "predicted", 0], ["label", "predicted", "class_0"]),
        ({"top": 3}, ["top1", "top2", "top3"]),
    ],
)
def test_each_target_has_a_slot_name(target, slots):
    assert load_config({"target": target}).target_slots() == slots


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ([], "target: is an empty list"),
        ([208, 208], "target: repeats class_208; name each target once"),
        (["label", "label"], "target: repeats label"),
        ([1, -2], "target: lists -2; each entry of a list of targets is predicted, label or a class index"),
        ([1, "best"], "target: lists 'best'"),
        ({"top": 0}, "got {'top': 0}"),
        ({"top": 2, "k": 1}, "got {'top': 2, 'k': 1}"),
        ({"top": True}, "{top: k} with k >= 1"),
        ("best", "got 'best'"),
        (1.5, "got 1.5"),
        (True, "got True"),
    ],
)
def test_a_wrong_target_gets_one_message(target, message):
    with pytest.raises(ConfigError) as err:
        load_config({"target": target})
    assert message in str(err.value)
    assert str(err.value).count("target") <= 3  # one message, not one per member of the union


def test_class_names_inline_and_from_files(tmp_path):
    assert load_config({"class_names": ["cat", "dog"]}).class_names == {0: "cat", 1: "dog"}
    assert load_config({"class_names": {3: "tabby", "7": "cock"}}).class_names == {3: "tabby", 7: "cock"}
    listed = tmp_path / "names.json"
    listed.write_text(json.dumps(["a", "b", "c"]))
    assert load_config({"class_names": str(listed)}).class_names == {0: "a", 1: "b", 2: "c"}
    imagenet = tmp_path / "imagenet_class_index.json"
    imagenet.write_text(json.dumps({"281": ["n02123045", "tabby"], "7": ["n01514859", "cock"]}))
    assert load_config({"class_names": str(imagenet)}).class_names == {281: "tabby", 7: "cock"}
    text = tmp_path / "synset_words.txt"
    text.write_text("tench\ngoldfish\n\nwhite shark\n")
    assert load_config({"class_names": str(text)}).class_names == {
        0: "tench",
        1: "goldfish",
        2: "white shark",
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("missing.json", "class names file 'missing.json' does not exist"),
        ([], "class_names is empty"),
        (["a", ""], "gives class 1 the name ''"),
        ({"x": "a"}, "has the key 'x'; keys are class indices"),
        (3, "must be a list of names or a mapping of class index to name, got 3"),
    ],
)
def test_wrong_class_names_are_refused(value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config({"class_names": value})


# --------------------------------------------------------------------------------------------------
# Resolving targets


def test_top_k_is_the_classes_in_order_of_score_and_top1_is_the_prediction():
    scores = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5], [5.0, 5.0, 1.0, 0.0, 4.0]])
    top = resolve_targets(load_config({"target": {"top": 3}}).target, scores, None)
    # Row 1 ties classes 0 and 1: the lower index first, as argmax takes it.
    assert top.tolist() == [[1, 3, 4], [0, 1, 4]]
    assert torch.equal(top[:, 0], scores.argmax(dim=1))
    fixed = resolve_targets(
        load_config({"target": [4, "label", "predicted"]}).target, scores, np.array([2, 3])
    )
    assert fixed.tolist() == [[4, 2, 1], [4, 3, 0]]
    assert fixed.dtype == torch.int64


# --------------------------------------------------------------------------------------------------
# Occlusion: every target from the same passes


class _CountingCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 5)
        )
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        return self.net(x)


def test_occlusion_explains_every_target_from_the_same_forward_passes():
    model = _CountingCNN().eval()
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[1, 4, 0], [0, 2, 3], [3, 3, 1]])
    method = build(
        "occlusion",
        load_config(
            {"methods": {"occlusion": {"sliding_window_shapes": [3, 4, 4], "strides": [3, 3, 3]}}}
        ).methods.occlusion,
    )
    handle = ModelHandle(model, torch.device("cpu"), "logit")
    shared = method.attribute_targets(handle, x, targets)
    images_shared = model.images
    model.images = 0
    method.attribute(handle, x, targets[:, 0])
    assert images_shared == model.images  # three targets cost what one does
    for k in range(3):
        reference = CaptumOcclusion(model.net).attribute(
            x, sliding_window_shapes=(3, 4, 4), strides=(3, 3, 3), target=targets[:, k], baselines=0.0
        )
        torch.testing.assert_close(shared[k].values, reference, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Through audit(): masks, metrics and rows per target


def test_ig_of_a_linear_model_is_known_for_every_target(tmp_path):
    model = _linear_model()
    x, labels = _rows(), np.array([0, 1, 2, 3, 4, 0])
    report = audit(
        model,
        x,
        {
            "target": [2, "label", "predicted"],
            "methods": {"integrated_gradients": {"n_steps": 8}},
            "artifacts": {"mask_dtype": "float32"},
        },
        labels=labels,
    )
    w = model[0].weight.detach().numpy()
    predicted = (x @ w.T + model[0].bias.detach().numpy()).argmax(1)
    expected_classes = {"class_2": np.full(6, 2), "label": labels, "predicted": predicted}
    assert sorted(report.methods) == [f"integrated_gradients/{slot}" for slot in sorted(expected_classes)]
    for slot, classes in expected_classes.items():
        result = report.methods[f"integrated_gradients/{slot}"]
        assert result.method == "integrated_gradients" and result.target == slot
        np.testing.assert_array_equal(result.targets, classes)
        np.testing.assert_allclose(result.attributions, x * w[classes], rtol=1e-6)  # zero baseline
    metrics = report.metrics()
    for slot in expected_classes:
        assert metrics[f"xai/integrated_gradients/{slot}/completeness_pass_fraction"] == 1.0
        assert metrics[f"xai/integrated_gradients/{slot}/samples"] == 6.0
    assert "xai/integrated_gradients/samples" not in metrics
    assert set(metrics) <= set(metric_catalogue(report.config))
    row = report.per_sample_rows()[1]
    assert (row["target/class_2"], row["target/label"], row["target/predicted"]) == (2, 1, int(predicted[1]))
    assert row["integrated_gradients/label/status"] == "pass"
    folder = write_artifacts(report, tmp_path / "out")
    for slot, classes in expected_classes.items():
        with np.load(folder / "integrated_gradients" / slot / "masks.npz") as saved:
            np.testing.assert_allclose(saved["attributions"], x * w[classes], rtol=1e-6)
    table = summary_table(metrics)
    assert "integrated_gradients/class_2" in table and "integrated_gradients/label" in table


def test_random_draws_are_the_same_for_every_target_of_a_sample():
    # GradientShap with a uniform baseline draws per sample: two targets audited together give what
    # each audited alone gives, bit for bit.
    model = _linear_model()
    x = _rows()
    methods = {"gradient_shap": {"baseline": {"kind": "uniform", "seed": 3}, "n_samples": 4}}
    together = audit(model, x, {"target": [1, 3], "methods": methods})
    for cls in (1, 3):
        alone = audit(model, x, {"target": cls, "methods": methods})
        np.testing.assert_array_equal(
            together.methods[f"gradient_shap/class_{cls}"].attributions,
            alone.methods["gradient_shap"].attributions,
        )


def test_one_entry_list_names_results_as_one_target_does():
    report = audit(_linear_model(), _rows(), {"target": [3], "methods": {"saliency": {}}})
    assert list(report.methods) == ["saliency"] and report.methods["saliency"].target is None


# --------------------------------------------------------------------------------------------------
# Refusals before any compute


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"target": {"top": 6}}, "target top: 6 asks for more classes than the model has (5)"),
        ({"target": [1, 7]}, "target class 7 is out of range: the model has 5 classes"),
        ({"class_names": ["a"] * 9}, "class_names names class 8, but the model has 5 classes"),
    ],
)
def test_targets_and_names_that_do_not_fit_the_model_are_refused(config, message):
    with pytest.raises(ProbeError, match=re.escape(message)):
        audit(_linear_model(), _rows(), {**config, "methods": {"saliency": {}}})


def test_label_in_a_list_needs_labels():
    with pytest.raises(ProbeError, match="target 'label' needs probe labels"):
        audit(_linear_model(), _rows(), {"target": [0, "label"], "methods": {"saliency": {}}})


# --------------------------------------------------------------------------------------------------
# The gate: every target is judged


def _two_target_config(**gate):
    return load_config(
        {"target": [0, 3], "methods": {"integrated_gradients": {"n_steps": 8}, "occlusion": {}}, "gate": gate}
    )


def test_a_threshold_without_a_target_is_judged_for_each_target():
    config = _two_target_config(
        thresholds={"xai/occlusion/seconds": {"fail": 1.0, "higher_is_better": False}}
    )
    check_gate_config(config, has_baseline=False)
    metrics = {"xai/occlusion/class_0/seconds": 0.5, "xai/occlusion/class_3/seconds": 2.0}
    result = judge(
        metrics, config.model_copy(update={"gate": config.gate.model_copy(update={"method_checks": False})})
    )
    assert [(c.name, c.level) for c in result.checks] == [
        ("xai/occlusion/class_0/seconds", "pass"),
        ("xai/occlusion/class_3/seconds", "fail"),
    ]
    assert result.exit_code == 1


def test_a_threshold_can_name_one_target():
    config = _two_target_config(
        method_checks=False,
        thresholds={"xai/occlusion/class_3/seconds": {"fail": 1.0, "higher_is_better": False}},
    )
    result = judge({"xai/occlusion/class_3/seconds": 0.25}, config)
    assert [(c.name, c.level) for c in result.checks] == [("xai/occlusion/class_3/seconds", "pass")]


def test_method_checks_judge_each_target_and_name_the_failing_one():
    config = _two_target_config()
    ig = "xai/integrated_gradients"
    metrics = {
        f"{ig}/class_0/samples": 4.0,
        f"{ig}/class_0/degenerate_baseline_count": 0.0,
        f"{ig}/class_0/completeness_pass_fraction": 1.0,
        f"{ig}/class_3/samples": 4.0,
        f"{ig}/class_3/degenerate_baseline_count": 0.0,
        f"{ig}/class_3/completeness_pass_fraction": 0.5,
        f"{ig}/class_3/completeness_rel_error_max": 0.2,
    }
    result = judge(metrics, config)
    assert [(c.name, c.level) for c in result.checks] == [
        ("integrated_gradients/class_0.completeness", "pass"),
        ("integrated_gradients/class_3.completeness", "fail"),
    ]
    assert "2 of 4 samples above 0.01" in result.checks[1].message


def test_a_metric_missing_for_one_target_says_why():
    config = _two_target_config(
        method_checks=False,
        thresholds={
            "xai/integrated_gradients/completeness_rel_error_max": {"fail": 0.1, "higher_is_better": False}
        },
    )
    ig = "xai/integrated_gradients"
    metrics = {
        f"{ig}/class_0/completeness_rel_error_max": 0.01,
        f"{ig}/class_3/samples": 4.0,
        f"{ig}/class_3/degenerate_baseline_count": 4.0,
    }
    checks = judge(metrics, config).checks
    assert [c.level for c in checks] == ["pass", "fail"]
    assert "every one of 4 samples has a degenerate baseline" in checks[1].message


def test_an_unknown_metric_with_several_targets_lists_the_per_target_names():
    config = _two_target_config(thresholds={"xai/occlusion/secs": {"fail": 1.0}})
    with pytest.raises(ConfigError) as err:
        check_gate_config(config, has_baseline=False)
    assert (
        "did you mean 'xai/occlusion/seconds'? It produces for each target (class_0, class_3; or add the "
        "target: xai/occlusion/class_0/...): "
    ) in str(err.value)
    assert "xai/occlusion/samples, xai/occlusion/seconds" in str(err.value)


# --------------------------------------------------------------------------------------------------
# Titles and captions


def test_sheet_titles_and_captions_name_the_explained_class():
    model = _linear_model()
    names = ["zero", "one", "two", "three", "four"]
    x, labels = _rows(), np.array([0, 1, 2, 3, 4, 0])
    report = audit(
        model,
        x,
        {"target": [3, "label"], "class_names": names, "methods": {"saliency": {}}},
        labels=labels,
    )
    fixed, by_label = report.methods["saliency/class_3"], report.methods["saliency/label"]
    assert _target_title(report, fixed) == "target class 3 three"
    assert _target_title(report, by_label) == "target label"
    pred = int(report.predictions[2])
    caption = _caption(report, by_label, 2)
    assert caption.splitlines()[:2] == [str(report.probe.ids[2]), f"label 2 two pred {pred} {names[pred]}"]
    # The explained class is added where it is not the prediction.
    assert caption.splitlines()[2:] == ([] if pred == 2 else ["explains 2 two"])
    top = audit(model, x, {"target": {"top": 2}, "methods": {"saliency": {}}})
    second = top.methods["saliency/top2"]
    assert _target_title(top, second) == "target top2"
    assert _caption(top, second, 0).splitlines()[-1] == f"explains {int(second.targets[0])}"


# --------------------------------------------------------------------------------------------------
# The command line, on a real tracking store


def test_cli_audit_of_two_targets_logs_each_and_gates_each(
    tracking_store, small_cnn, shapes16, tmp_path, capsys
):
    import xml.etree.ElementTree as ET

    import mlflow
    from helpers import log_pytorch_model
    from mlflow import MlflowClient

    from mlflow_xai.cli import main

    _, probe = shapes16
    probe_file = tmp_path / "probe.npz"
    np.savez(probe_file, inputs=probe.images[:4], labels=probe.labels[:4])
    uri = log_pytorch_model(small_cnn, probe.images[:2])
    config = tmp_path / "two.yaml"
    config.write_text(
        "target: [0, label]\n"
        "class_names: [circle, square, triangle, cross]\n"
        "methods:\n  integrated_gradients: {n_steps: 16}\n  occlusion: {}\n"
        "gate:\n  method_checks: false\n  thresholds:\n"
        "    xai/occlusion/samples: {fail: 4}\n"
    )
    assert main(["validate-config", str(config)]) == 0
    assert "2 targets, each with its own masks and metrics: class_0, label" in capsys.readouterr().out
    args = ["audit", "--model-uri", uri, "--probe", str(probe_file), "--config", str(config)]
    code = main([*args, "--experiment", "two", "--junit", str(tmp_path / "j.xml")])
    out = capsys.readouterr().out
    assert code == 0, out
    (run,) = mlflow.search_runs(experiment_names=["two"], output_format="list")
    for key in (
        "occlusion/class_0",
        "occlusion/label",
        "integrated_gradients/class_0",
        "integrated_gradients/label",
    ):
        assert run.data.metrics[f"xai/{key}/samples"] == 4.0
        listed = [f.path for f in MlflowClient().list_artifacts(run.info.run_id, f"xai/{key}")]
        assert f"xai/{key}/masks.npz" in listed and f"xai/{key}/sheet.png" in listed
    cases = [c.get("name") for c in ET.parse(tmp_path / "j.xml").getroot().iter("testcase")]
    assert cases == ["xai/occlusion/class_0/samples", "xai/occlusion/label/samples"]
    assert "occlusion/class_0" in out and "integrated_gradients/label" in out  # the summary table


def test_mlflow_metric_thresholds_are_one_per_target():
    from mlflow_xai.tracking import metric_thresholds

    config = _two_target_config(
        thresholds={
            "xai/occlusion/seconds": {"fail": 2.0, "higher_is_better": False},
            "xai/integrated_gradients/class_3/completeness_pass_fraction": {"fail": 0.9},
        }
    )
    thresholds = metric_thresholds(config)
    assert sorted(thresholds) == [
        "xai/integrated_gradients/class_3/completeness_pass_fraction",
        "xai/occlusion/class_0/seconds",
        "xai/occlusion/class_3/seconds",
    ]
    assert thresholds["xai/occlusion/class_3/seconds"].threshold == 2.0
    assert thresholds["xai/occlusion/class_3/seconds"].greater_is_better is False


def test_a_target_the_audit_does_not_have_is_refused():
    config = _two_target_config(thresholds={"xai/occlusion/class_7/seconds": {"fail": 1.0}})
    with pytest.raises(ConfigError, match=re.escape("'xai/occlusion/class_7/seconds', which 'occlusion'")):
        check_gate_config(config, has_baseline=False)
    # A method name in the target's place names no metric, even where the rest would.
    junk = _two_target_config(thresholds={"xai/junk/occlusion/seconds": {"fail": 1.0}})
    with pytest.raises(ConfigError, match="but method 'junk' is not enabled"):
        check_gate_config(junk, has_baseline=False)
    one = load_config(
        {
            "methods": {"occlusion": {}},
            "gate": {"thresholds": {"xai/occlusion/predicted/seconds": {"fail": 1}}},
        }
    )
    with pytest.raises(ConfigError, match="did you mean 'xai/occlusion/seconds'"):
        check_gate_config(one, has_baseline=False)
