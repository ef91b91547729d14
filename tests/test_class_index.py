"""probe.class_index: an image folder's class folders labelled with the model's own class indices.

Folder labels are the sorted folder positions (cat=0, dog=1), as torchvision's ImageFolder gives
them; on an ImageNet model ``target: label`` then explained classes 0 and 1. ``class_index`` maps
each folder to the model's class; without it the probe set records that its labels are folder
positions, so that they are never mistaken for the model's classes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from mlflow_xai.config import ProbeConfig, load_config
from mlflow_xai.errors import ConfigError, ProbeError
from mlflow_xai.probe import ProbeSet
from mlflow_xai.probe.loaders import load_probe

CAT, DOG = 281, 207  # tabby and golden retriever in ImageNet's 1000 classes
SCALE = {"scale": 255}
STORED = {"mask_dtype": "float32", "sheet_samples": 0}  # attributions as float32, no figures


def _write_folder(root, names=("dog", "cat"), per_class=2):
    """8x8 RGB PNGs, ``per_class`` in each class folder; returns {relative path: CHW pixels}."""
    from PIL import Image

    rng = np.random.default_rng(0)
    written = {}
    for name in names:  # not in sorted order: the probe's order is the sorted one
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"img{k}.png")
            written[f"{name}/img{k}.png"] = pixels.transpose(2, 0, 1)
    return written


def _config(class_index=None, **extra):
    probe = {"preprocess": SCALE}
    if class_index is not None:
        probe["class_index"] = class_index
    return ProbeConfig.model_validate({**probe, **extra})


def _model(classes=300):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, classes))


def _audit(model, folder, target, class_index):
    from mlflow_xai import audit

    config = {
        "device": "cpu",
        "target": target,
        "probe": {"preprocess": SCALE, "class_index": class_index},
        "methods": {"integrated_gradients": {"n_steps": 4}},
        "artifacts": STORED,
    }
    return audit(model, folder, config)


def test_class_index_labels_an_image_folder_with_the_models_classes(tmp_path):
    written = _write_folder(tmp_path / "probe")
    probe = load_probe(tmp_path / "probe", _config({"cat": CAT, "dog": DOG}))

    # Ids and order as without a class index (sorted folders, sorted files); only labels change.
    assert probe.ids.tolist() == ["cat/img0.png", "cat/img1.png", "dog/img0.png", "dog/img1.png"]
    assert probe.labels.tolist() == [CAT, CAT, DOG, DOG]
    assert probe.class_names == {CAT: "cat", DOG: "dog"}
    assert probe.label_source == "class_index"
    for i, sample_id in enumerate(probe.ids.tolist()):
        np.testing.assert_allclose(probe.inputs[i], written[sample_id] / 255, rtol=1e-6)


def test_label_target_explains_the_mapped_class(tmp_path):
    """target: label on a 300-class model explains 281 for cats and 207 for dogs, exactly as the
    fixed targets 281 and 207 do, and not the folder positions 0 and 1."""
    _write_folder(tmp_path / "probe")
    model = _model()
    class_index = {"cat": CAT, "dog": DOG}
    report = _audit(model, tmp_path / "probe", "label", class_index)

    assert report.targets.tolist() == [CAT, CAT, DOG, DOG]
    assert report.probe.labels.tolist() == [CAT, CAT, DOG, DOG]
    by_label = report.methods["integrated_gradients"].attributions
    cat, dog = slice(0, 2), slice(2, 4)
    for cls, rows in ((CAT, cat), (DOG, dog)):
        direct = _audit(model, tmp_path / "probe", cls, class_index)
        assert direct.targets.tolist() == [cls] * 4
        np.testing.assert_array_equal(
            by_label[rows], direct.methods["integrated_gradients"].attributions[rows]
        )

    # IG of a linear model against a zero baseline is x * W[class]: the model's class 281, not 0.
    weight = model[1].weight.detach().numpy().reshape(300, 3, 8, 8)
    x = report.probe.inputs
    np.testing.assert_allclose(by_label[cat], x[cat] * weight[CAT], rtol=1e-4, atol=1e-6)
    assert not np.allclose(by_label[cat], x[cat] * weight[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layout", ["names", "imagenet"])
def test_class_index_from_a_json_file(tmp_path, layout):
    if layout == "names":
        folders = ("cat", "dog")
        data = {"cat": CAT, "dog": DOG, "fox": 277}  # may name more classes than the probe has
    else:  # ImageNet's imagenet_class_index.json: folders are the WordNet ids
        folders = ("n02123045", "n02099601")
        data = {
            "0": ["n01440764", "tench"],
            str(CAT): ["n02123045", "tabby"],
            str(DOG): ["n02099601", "golden"],
        }
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(data))
    _write_folder(tmp_path / "probe", names=folders)

    config = load_config({"probe": {"preprocess": SCALE, "class_index": str(path)}})
    probe = load_probe(tmp_path / "probe", config.probe)

    expected = {"cat": CAT, "dog": DOG} if layout == "names" else {"n02123045": CAT, "n02099601": DOG}
    assert {name: config.probe.class_index[name] for name in folders} == expected
    assert sorted(probe.labels.tolist()) == [DOG, DOG, CAT, CAT]
    assert {probe.class_names[int(label)] for label in probe.labels} == set(folders)
    for sample_id, label in zip(probe.ids.tolist(), probe.labels.tolist(), strict=True):
        assert expected[sample_id.split("/")[0]] == label

    # The logged config keeps the mapping read from the file: it loads back without the file.
    import yaml

    from mlflow_xai.config import dump_config

    dumped = yaml.safe_load(dump_config(config))
    path.unlink()
    assert load_config(dumped) == config


def test_folder_without_class_index_keeps_sorted_positions_and_says_so(tmp_path):
    """Regression: without class_index the labels are ImageFolder's, and the probe records that
    they are folder positions (the engine refuses them as the model's classes on that record)."""
    _write_folder(tmp_path / "probe")
    probe = load_probe(tmp_path / "probe", _config())

    assert probe.ids.tolist() == ["cat/img0.png", "cat/img1.png", "dog/img0.png", "dog/img1.png"]
    assert probe.labels.tolist() == [0, 0, 1, 1]
    assert probe.label_source == "folder_order"
    assert probe.class_names == {0: "cat", 1: "dog"}
    # Sampling keeps the record.
    sample = probe.sample(2, "random", seed=1)
    assert (sample.label_source, sample.class_names) == ("folder_order", {0: "cat", 1: "dog"})
    # Other sources carry their own labels: no record, taken as the model's classes.
    assert load_probe(np.zeros((2, 3), np.float32), labels=np.array([0, 1])).label_source is None


def test_class_index_missing_a_folder_is_refused_before_any_compute(tmp_path):
    _write_folder(tmp_path / "probe")
    (tmp_path / "probe" / "dog" / "broken.png").write_bytes(b"not a png")  # never read
    calls = []

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = _model()

        def forward(self, x):
            calls.append(len(x))
            return self.inner(x)

    expected = (
        r"probe.class_index does not name 1 of the 2 class folders of '.*probe': 'dog'; it must give "
        r"the model's class index of every class folder \(it names folders such as 'cat'\)"
    )
    with pytest.raises(ConfigError, match=expected):
        load_probe(tmp_path / "probe", _config({"cat": CAT}))
    with pytest.raises(ConfigError, match=expected):
        _audit(Counting(), tmp_path / "probe", "label", {"cat": CAT})
    assert calls == []


def test_many_missing_folders_are_listed_a_few_at_most(tmp_path):
    names = [f"class{k}" for k in range(8)]
    _write_folder(tmp_path / "probe", names=names, per_class=1)
    with pytest.raises(ConfigError) as err:
        load_probe(tmp_path / "probe", _config({"class0": 3}))
    message = str(err.value)
    assert "does not name 7 of the 8 class folders" in message
    assert "'class1', 'class2', 'class3', 'class4', 'class5' and 2 more" in message
    assert "class6" not in message


@pytest.mark.parametrize("kind", ["array", "probe_set", "npy_file", "dataset", "missing_folder"])
def test_class_index_for_a_source_that_is_not_an_image_folder_is_refused(tmp_path, kind):
    x = np.zeros((2, 3, 8, 8), np.float32)
    if kind == "array":
        source, what = x, r"an array \(ndarray\)"
    elif kind == "probe_set":
        source, what = ProbeSet(x, np.array([0, 1])), "a ProbeSet"
    elif kind == "npy_file":
        np.save(tmp_path / "probe.npy", x)
        source, what = tmp_path / "probe.npy", "'.*probe.npy', which is a file, not a folder"
    elif kind == "dataset":
        source = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.tensor([0, 1]))
        what = r"a Dataset \(TensorDataset\)"
    else:
        source, what = tmp_path / "nowhere", "'.*nowhere', which does not exist, not a folder"
    config = ProbeConfig.model_validate({"class_index": {"cat": CAT}})
    with pytest.raises(
        ConfigError, match=rf"probe.class_index maps the class folders of an image folder .* {what}"
    ):
        load_probe(source, config)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"cat": -1},
            "probe.class_index: the mapping maps folder 'cat' to -1; a class index is an integer >= 0",
        ),
        ({"cat": 2.0}, "the mapping maps folder 'cat' to 2.0; a class index is an integer >= 0"),
        ({"cat": "281"}, "the mapping maps folder 'cat' to '281'; a class index is an integer >= 0"),
        ({"cat": True}, "the mapping maps folder 'cat' to True"),
        ({"cat": 281, "tabby": 281}, "the mapping maps both 'cat' and 'tabby' to class 281"),
        ({1: 3}, "the mapping has the key 1; a folder name is a non-empty string"),
        ({}, "probe.class_index: the mapping is empty"),
        ([281, 207], "probe.class_index: must be a mapping of folder name to class index"),
        ({"281": ["n02123045", "tabby"], "dog": 207}, "the mapping mixes the two layouts"),
    ],
)
def test_bad_inline_class_index_gets_one_clear_error(value, message):
    with pytest.raises(ConfigError) as err:
        load_config({"probe": {"class_index": value}})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "class index file '{path}' does not exist; give a JSON file holding a mapping"),
        ('{"cat": 281,}', "class index file '{path}' is not valid JSON: "),
        ('{"cat": 281, "cat": 7}', "class index file '{path}' has the key 'cat' twice"),
        ('[["n02123045", "tabby"]]', "class index file '{path}' must hold a mapping of folder name"),
        ('{"tabby": ["n02123045", "tabby"]}', "has the key 'tabby' with a list value; in the layout of"),
        ('{"281": ["n02123045"]}', "maps '281' to ['n02123045']; in the layout of imagenet_class_index"),
        ('{"281": ["n02123045", "a"], "282": ["n02123045", "b"]}', "names folder 'n02123045' for both"),
        ('{"cat": 281, "dog": 281}', "class index file '{path}' maps both 'cat' and 'dog' to class 281"),
    ],
)
def test_bad_class_index_file_names_the_file(tmp_path, text, message):
    path = tmp_path / "classes.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config({"probe": {"class_index": str(path)}})
    assert str(err.value).startswith("invalid config: probe.class_index: class index file ")
    assert message.format(path=path) in str(err.value)
    assert "\n" not in str(err.value)


def test_probe_set_checks_its_class_record():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ProbeError, match=r"class_names must name the class of every label; labels \[1\]"):
        ProbeSet(x, np.array([0, 1]), class_names={0: "cat"})
    with pytest.raises(ProbeError, match="label_source must be one of folder_order, class_index"):
        ProbeSet(x, np.array([0, 1]), label_source="guess")
    with pytest.raises(ProbeError, match="label_source 'folder_order' describes labels, but there are none"):
        ProbeSet(x, label_source="folder_order")


def test_label_target_on_a_folder_without_class_index_is_refused_before_any_compute(tmp_path, monkeypatch):
    from mlflow_xai import audit
    from mlflow_xai.engine import BatchAttributor

    _write_folder(tmp_path / "imgs")

    def no_batch(*args, **kwargs):
        raise AssertionError("a batch ran")

    monkeypatch.setattr(BatchAttributor, "run", no_batch)
    config = {"target": "label", "probe": {"preprocess": SCALE}, "methods": {"saliency": {}}}
    with pytest.raises(ConfigError, match=r"sorted order \(cat=0, dog=1\), not known to be the model's"):
        audit(_model(), tmp_path / "imgs", config)


def test_folder_positions_score_no_accuracy_but_mapped_labels_do(tmp_path):
    from mlflow_xai import audit

    _write_folder(tmp_path / "imgs")
    config = {"probe": {"preprocess": SCALE}, "methods": {"saliency": {}}, "artifacts": STORED}
    unmapped = audit(_model(), tmp_path / "imgs", config)
    assert "xai/probe/accuracy" not in unmapped.metrics()
    assert {row["accuracy"] for row in unmapped.class_summary()} == {""}
    mapped = _audit(_model(), tmp_path / "imgs", "predicted", {"cat": 281, "dog": 207})
    predictions = mapped.predictions
    expected = float((predictions == np.array([281, 281, 207, 207])).mean())
    assert mapped.metrics()["xai/probe/accuracy"] == expected
