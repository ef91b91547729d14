"""Probe sets: sources, preprocessing, sampling, ids, masks, hashing, and bounded memory."""

from __future__ import annotations

import gc

import numpy as np
import pytest

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
