"""Probe sets: sources, preprocessing, sampling, ids, masks, hashing, and bounded memory."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import torch

from mlflow_xai.errors import ProbeError
from mlflow_xai.probe import CHUNK_ROWS, ProbeSet, load_npz, stratified_index


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 4, 4), dtype=np.float32)


def test_npy_probe_is_memory_mapped(tmp_path):
    x = _images(20)
    np.save(tmp_path / "probe.npy", x)
    probe = load_npz(tmp_path / "probe.npy")
    assert isinstance(probe.inputs, np.memmap)
    np.testing.assert_array_equal(probe.inputs, x)
    batch = next(probe.batches(8))
    assert type(batch.inputs) is np.ndarray  # a copy: the engine never writes through the map
    assert probe.sha256() == ProbeSet(x).sha256()


def test_non_finite_value_in_a_late_chunk_is_found():
    x = np.zeros((CHUNK_ROWS * 2 + 5, 3), np.float32)
    x[-1, 2] = np.inf
    x[CHUNK_ROWS + 1, 0] = np.nan
    with pytest.raises(ProbeError, match=r"NaN or Inf in 2 sample\(s\)"):
        ProbeSet(x)


@pytest.mark.parametrize("field", ["inputs", "labels", "masks", "ids"])
def test_hash_covers_every_array(field):
    n = CHUNK_ROWS + 3  # the changed value sits in the second chunk
    arrays = {
        "inputs": np.zeros((n, 2, 3), np.float32),
        "labels": np.zeros(n, np.int64),
        "masks": np.zeros((n, 2, 3), bool),
        "ids": np.array([f"s{i}" for i in range(n)]),
    }
    before = ProbeSet(**arrays).sha256()
    changed = dict(arrays)
    changed[field] = arrays[field].copy()
    if field == "ids":
        changed["ids"][-1] = "other"
    else:
        changed[field].reshape(-1)[-1] = 1  # a view: the last value of the last sample
    assert ProbeSet(**changed).sha256() != before
    assert ProbeSet(**{k: v.copy() for k, v in arrays.items()}).sha256() == before


def test_hash_tells_masks_apart_from_no_masks():
    x = np.zeros((3, 2, 2), np.float32)
    assert ProbeSet(x).sha256() != ProbeSet(x, masks=np.zeros((3, 2, 2), bool)).sha256()


def test_stratified_sampling_keeps_class_shares_and_ids():
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    probe = ProbeSet(_images(100), labels, ids=np.array([f"img{i}" for i in range(100)]))
    sample = probe.sample(20, "stratified", seed=3)
    assert np.bincount(sample.labels).tolist() == [16, 3, 1]
    positions = [int(i.removeprefix("img")) for i in sample.ids]
    assert positions == sorted(positions)  # probe order and the original ids are kept
    np.testing.assert_array_equal(sample.inputs, probe.inputs[positions])
    assert sample.ids.tolist() == probe.sample(20, "stratified", seed=3).ids.tolist()  # seeded
    assert sample.ids.tolist() != probe.sample(20, "stratified", seed=4).ids.tolist()


def test_stratified_sampling_keeps_a_rare_class():
    labels = np.array([0] * 99 + [1])
    assert 99 in stratified_index(labels, 5, seed=0)
    assert len(stratified_index(labels, 5, seed=0)) == 5


def test_first_and_random_sampling():
    probe = ProbeSet(_images(10))
    assert probe.sample(3).ids.tolist() == ["000000", "000001", "000002"]
    drawn = probe.sample(3, "random", seed=1).ids.tolist()
    assert len(set(drawn)) == 3 and drawn == sorted(drawn)
    assert probe.sample(50, "random") is probe


def test_stratified_sampling_needs_labels():
    with pytest.raises(ProbeError, match="sampling 'stratified' needs probe labels"):
        ProbeSet(_images(10)).sample(3, "stratified")


def test_sampling_a_mapped_probe_spills_to_disk_and_cleans_up(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    np.save(tmp_path / "probe.npy", _images(50))
    probe = load_npz(tmp_path / "probe.npy")
    sample = probe.sample(7, "random", seed=0)
    assert isinstance(sample.inputs, np.memmap)
    np.testing.assert_array_equal(sample.inputs, probe.inputs[np.sort(sample.ids.astype(int))])
    assert len(list((tmp_path / "tmp").iterdir())) == 1
    del sample
    gc.collect()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_feature_names_name_tabular_columns(tmp_path):
    x = np.zeros((4, 3), np.float32)
    probe = ProbeSet(x, feature_names=["age", "income", "score"])
    assert probe.feature_names == ("age", "income", "score")
    np.savez(tmp_path / "tab.npz", inputs=x, feature_names=np.array(["a", "b", "c"]))
    assert load_npz(tmp_path / "tab.npz").feature_names == ("a", "b", "c")
    with pytest.raises(ProbeError, match="got 2 names for inputs of shape"):
        ProbeSet(x, feature_names=["a", "b"])
    with pytest.raises(ProbeError, match="tabular inputs"):
        ProbeSet(np.zeros((4, 3, 2), np.float32), feature_names=["a", "b", "c"])


def test_integer_inputs_are_refused_not_coerced():
    with pytest.raises(ProbeError, match=r"got uint8.*scale: 255"):
        ProbeSet(np.zeros((2, 3, 4, 4), np.uint8))


# --------------------------------------------------------------------------------------------------
# Sources and preprocessing

PREPROCESS = {"scale": 255, "resize": 12, "center_crop": 10, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}


def _write_folder(root, sizes=((16, 20), (20, 16), (16, 16))):
    """Three classes, one image per size each; returns {relative path: uint8 HWC pixels}."""
    from PIL import Image

    rng = np.random.default_rng(0)
    written = {}
    for name in ("dog", "cat", "bird"):  # not in sorted order: labels follow sorted names
        (root / name).mkdir(parents=True)
        for k, (h, w) in enumerate(sizes):
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"img{k}.png")
            written[f"{name}/img{k}.png"] = pixels
    (root / "cat" / "notes.txt").write_text("not an image")
    return written


def test_image_folder_matches_torchvision(tmp_path):
    from PIL import Image
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    from mlflow_xai.config import ProbeConfig
    from mlflow_xai.probe.loaders import load_probe

    written = _write_folder(tmp_path / "probe")
    config = ProbeConfig.model_validate({"preprocess": PREPROCESS})
    probe = load_probe(tmp_path / "probe", config)
    # The reference: torchvision's ImageFolder with the transforms of Captum's tutorial.
    reference = ImageFolder(
        tmp_path / "probe",
        transform=transforms.Compose(
            [
                transforms.Resize(12),
                transforms.CenterCrop(10),
                transforms.ToTensor(),
                transforms.Normalize(PREPROCESS["mean"], PREPROCESS["std"]),
            ]
        ),
    )
    assert probe.ids.tolist() == [
        str(Path(p).relative_to(tmp_path / "probe").as_posix()) for p, _ in reference.samples
    ]
    assert probe.labels.tolist() == [label for _, label in reference.samples]
    assert reference.classes == ["bird", "cat", "dog"]
    assert probe.input_shape == (3, 10, 10) and probe.inputs.dtype == np.float32
    one_level = 1 / 255 / min(PREPROCESS["std"])  # PIL and torch may round a resized pixel apart
    for i in range(len(reference)):
        x, _ = reference[i]
        difference = np.abs(probe.inputs[i] - x.numpy())
        assert difference.max() <= one_level + 1e-5
        assert difference.mean() < 0.1 * one_level
    assert len(written) == len(probe)
    assert Image  # PIL wrote the files


def test_torchvision_image_folder_dataset_gives_the_same_probe(tmp_path):
    """ImageFolder without a transform yields PIL images: read and preprocessed as the folder is."""
    from torchvision.datasets import ImageFolder

    from mlflow_xai.config import ProbeConfig
    from mlflow_xai.probe.loaders import load_probe

    _write_folder(tmp_path / "probe")
    config = ProbeConfig.model_validate({"preprocess": PREPROCESS})
    from_folder = load_probe(tmp_path / "probe", config)
    from_dataset = load_probe(ImageFolder(tmp_path / "probe"), config)
    np.testing.assert_array_equal(from_dataset.inputs, from_folder.inputs)
    np.testing.assert_array_equal(from_dataset.labels, from_folder.labels)


def test_image_folder_needs_a_declared_scale(tmp_path):
    from mlflow_xai.config import ProbeConfig
    from mlflow_xai.probe.loaders import load_probe

    _write_folder(tmp_path / "probe", sizes=((8, 8),))
    with pytest.raises(ProbeError, match=r"are uint8.*never scaled by guess.*scale: 255"):
        load_probe(tmp_path / "probe")
    config = ProbeConfig.model_validate({"preprocess": {"scale": 255}})
    probe = load_probe(tmp_path / "probe", config)
    assert 0.0 <= probe.inputs.min() and probe.inputs.max() <= 1.0


def test_image_folder_of_mixed_sizes_needs_resize(tmp_path):
    from mlflow_xai.config import ProbeConfig
    from mlflow_xai.probe.loaders import load_probe

    _write_folder(tmp_path / "probe")
    config = ProbeConfig.model_validate({"preprocess": {"scale": 255}})
    with pytest.raises(ProbeError, match=r"same shape.*resize"):
        load_probe(tmp_path / "probe", config)


def test_image_folder_errors(tmp_path):
    from mlflow_xai.probe.loaders import load_probe

    (tmp_path / "empty").mkdir()
    with pytest.raises(ProbeError, match="has no class subfolders"):
        load_probe(tmp_path / "empty")
    (tmp_path / "empty" / "cat").mkdir()
    with pytest.raises(ProbeError, match="class folder 'cat' .* has no image file"):
        load_probe(tmp_path / "empty")


def test_integer_array_is_scaled_and_normalized_with_masks(tmp_path):
    from mlflow_xai.config import ProbeConfig
    from mlflow_xai.probe.loaders import load_probe

    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, size=(5, 3, 8, 8), dtype=np.uint8)
    masks = np.zeros((5, 8, 8), bool)
    masks[:, 2:6, 2:6] = True
    np.savez(tmp_path / "p.npz", inputs=raw, labels=np.arange(5), masks=masks)
    config = ProbeConfig.model_validate(
        {"preprocess": {"scale": 255, "center_crop": 6, "mean": [0.5] * 3, "std": [0.5] * 3}}
    )
    probe = load_probe(tmp_path / "p.npz", config)
    np.testing.assert_allclose(probe.inputs, (raw[:, :, 1:7, 1:7] / 255.0 - 0.5) / 0.5, atol=1e-6)
    np.testing.assert_array_equal(probe.masks, masks[:, 1:7, 1:7])
    assert probe.labels.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ProbeError, match=r"are uint8.*scale: 255"):
        load_probe(tmp_path / "p.npz", ProbeConfig.model_validate({"preprocess": {"resize": 8}}))


def test_mean_std_must_match_the_channels():
    from mlflow_xai.config import ProbeConfig
    from mlflow_xai.probe.loaders import load_probe

    config = ProbeConfig.model_validate({"preprocess": {"mean": [0.5], "std": [0.5]}})
    with pytest.raises(ProbeError, match="mean/std have 1 values but probe inputs have 3 channels"):
        load_probe(_images(2), config)
    with pytest.raises(ProbeError, match=r"apply to images \(N, C, H, W\)"):
        load_probe(np.zeros((2, 5), np.float32), config)


def test_a_probe_set_with_preprocess_is_refused():
    from mlflow_xai.config import ProbeConfig
    from mlflow_xai.errors import ConfigError
    from mlflow_xai.probe.loaders import load_probe

    config = ProbeConfig.model_validate({"preprocess": {"scale": 255}})
    with pytest.raises(ConfigError, match="already in the model's input space"):
        load_probe(ProbeSet(_images(2)), config)


class _Pairs(torch.utils.data.Dataset):
    """A map-style Dataset of (tensor, int) pairs that counts the items it served."""

    def __init__(self, n):
        self.x = torch.from_numpy(_images(n, seed=2))
        self.served = 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.served += 1
        return self.x[i], i % 3


class _Dicts(torch.utils.data.IterableDataset):
    def __iter__(self):
        for i in range(6):
            mask = torch.zeros(4, 4, dtype=torch.bool)
            mask[i % 4] = True
            yield {
                "image": torch.full((3, 4, 4), float(i)),
                "label": torch.tensor(i % 2),
                "mask": mask,
                "id": f"s{i}",
            }


def test_dataset_of_pairs():
    from mlflow_xai.probe.loaders import load_probe

    dataset = _Pairs(7)
    probe = load_probe(dataset)
    np.testing.assert_array_equal(probe.inputs, dataset.x.numpy())
    assert probe.labels.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert probe.ids.tolist()[:2] == ["000000", "000001"]


def test_audit_takes_a_dataset_and_reads_only_max_samples():
    from mlflow_xai.engine import audit

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
    config = {
        "max_samples": 4,
        "methods": {"integrated_gradients": {"n_steps": 4}},
        "artifacts": {"sheet_samples": 0},
    }
    dataset = _Pairs(50)
    report = audit(model, dataset, config)
    assert dataset.served == 4 and len(report.probe) == 4
    loader = torch.utils.data.DataLoader(_Pairs(10), batch_size=3)
    stratified = {**config, "probe": {"sampling": "stratified"}}
    report = audit(model, loader, stratified)
    assert sorted(report.probe.labels.tolist()) == [0, 0, 1, 2]  # 4 of 10 by class share 4:3:3
    assert report.probe.ids.tolist() == audit(model, _Pairs(10), stratified).probe.ids.tolist()


def test_iterable_dataset_of_dicts_and_dataloader_agree():
    from mlflow_xai.probe.loaders import load_probe

    probe = load_probe(_Dicts())
    assert probe.ids.tolist() == [f"s{i}" for i in range(6)]
    assert probe.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert probe.masks.shape == (6, 4, 4) and probe.masks[5, 1].all() and not probe.masks[5, 0].any()
    batched = load_probe(torch.utils.data.DataLoader(_Dicts(), batch_size=4))
    assert batched.sha256() == probe.sha256()


def test_inconsistent_samples_are_refused():
    from mlflow_xai.probe.loaders import load_probe

    class Mixed(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield torch.zeros(3, 4, 4), 1
            yield (torch.zeros(3, 4, 4),)

    with pytest.raises(ProbeError, match="probe sample 1 differs from the first"):
        load_probe(Mixed())

    class Sizes(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield torch.zeros(3, 4, 4), 1
            yield torch.zeros(3, 5, 4), 1

    with pytest.raises(ProbeError, match=r"sample 1 has \[3, 5, 4\]"):
        load_probe(Sizes())


# --------------------------------------------------------------------------------------------------
# MLflow's evaluation data


def test_dataframe_column_of_arrays_keeps_its_shape():
    import pandas as pd

    from mlflow_xai.tracking.evaluate import evaluation_inputs

    x = _images(5)
    inputs, names = evaluation_inputs(pd.DataFrame({"image": list(x)}), None)
    np.testing.assert_array_equal(inputs, x)
    assert names is None
    flat, _ = evaluation_inputs(pd.DataFrame({"image": [v.ravel().tolist() for v in x]}), (3, 4, 4))
    np.testing.assert_array_equal(flat, x)
    with pytest.raises(ProbeError, match="holds arrays of 2 different shapes"):
        evaluation_inputs(pd.DataFrame({"image": [x[0], x[1, :2]]}), None)


def test_dataframe_of_integer_images_needs_a_scale():
    import pandas as pd

    from mlflow_xai.engine import audit
    from mlflow_xai.tracking.evaluate import evaluation_inputs

    raw = np.random.default_rng(0).integers(0, 256, size=(4, 3, 4, 4), dtype=np.uint8)
    inputs, _ = evaluation_inputs(pd.DataFrame({"image": list(raw)}), None)
    assert inputs.dtype == np.uint8  # kept as it is: the scale is the config's to declare
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
    config = {"methods": {"integrated_gradients": {"n_steps": 4}}, "artifacts": {"sheet_samples": 0}}
    with pytest.raises(ProbeError, match=r"are uint8.*scale: 255"):
        audit(model, inputs, config)
    report = audit(model, inputs, {**config, "probe": {"preprocess": {"scale": 255}}})
    np.testing.assert_allclose(report.probe.inputs, raw / 255.0, atol=1e-7)


def test_tabular_dataframe_gives_feature_names():
    import pandas as pd

    from mlflow_xai.engine import audit
    from mlflow_xai.tracking.evaluate import evaluation_inputs

    frame = pd.DataFrame({"age": [30.0, 41.0, 52.0], "income": [1.0, 2.0, 3.5], "score": [0.1, 0.2, 0.3]})
    inputs, names = evaluation_inputs(frame, None)
    assert names == ["age", "income", "score"] and inputs.shape == (3, 3)
    model = torch.nn.Linear(3, 2)
    config = {"methods": {"integrated_gradients": {"n_steps": 4}}, "artifacts": {"sheet_samples": 0}}
    report = audit(model, inputs.astype(np.float32), config, feature_names=names)
    assert report.probe.feature_names == ("age", "income", "score")
    with pytest.raises(ProbeError, match="non-numeric columns"):
        evaluation_inputs(pd.DataFrame({"a": ["x", "y"], "b": [1.0, 2.0]}), None)


def test_evaluate_takes_a_dataframe_column_of_uint8_images(tracking_store, small_cnn, shapes16):
    """End to end: mlflow.models.evaluate hands the DataFrame over; the config declares the scale."""
    import mlflow
    import pandas as pd

    _, probe = shapes16
    raw = np.round(probe.images[:6] * 255).astype(np.uint8)
    with mlflow.start_run():
        uri = mlflow.pytorch.log_model(
            small_cnn, name="model", serialization_format="pickle", pip_requirements=["torch"]
        ).model_uri
    config = {
        "batch_size": 6,
        "methods": {"integrated_gradients": {"n_steps": 8}},
        "artifacts": {"sheet_samples": 0},
        "probe": {"preprocess": {"scale": 255}},
    }
    with mlflow.start_run():
        result = mlflow.models.evaluate(
            uri,
            data=pd.DataFrame({"image": list(raw), "label": probe.labels[:6]}),
            targets="label",
            model_type="image_classifier",
            evaluators=["xai"],
            evaluator_config={"xai": config},
        )
    assert result.metrics["xai/probe/samples"] == 6.0
    with torch.no_grad():
        predicted = small_cnn(torch.from_numpy(raw / np.float32(255))).argmax(1).numpy()
    # The labels came through the target column and the images through the declared scale.
    assert result.metrics["xai/probe/accuracy"] == float((predicted == probe.labels[:6]).mean())
    assert result.metrics["xai/integrated_gradients/completeness_rel_error_max"] < 0.2
