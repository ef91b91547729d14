"""Faults: uploads that fail transiently, interrupted writes, identical results run after run."""

from __future__ import annotations

import numpy as np
import pytest

from mlflow_xai.engine import audit
from mlflow_xai.tracking import with_retries


def test_upload_is_retried_with_backoff_then_succeeds():
    calls, delays = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("server restarting")
        return "uploaded"

    assert with_retries(flaky, sleep=delays.append) == "uploaded"
    assert len(calls) == 3 and delays == [1.0, 2.0]


def test_upload_that_keeps_failing_raises_the_last_error():
    delays = []

    def broken():
        raise ConnectionError(f"attempt {len(delays) + 1}")

    with pytest.raises(ConnectionError, match="attempt 4"):
        with_retries(broken, sleep=delays.append)
    assert delays == [1.0, 2.0, 4.0]


def test_output_dir_is_replaced_whole_or_not_at_all(small_cnn, shapes16, tmp_path):
    from mlflow_xai.artifacts import write_artifacts
    from mlflow_xai.cli.audit import _write_folder_atomically

    _, probe = shapes16
    report = audit(small_cnn, probe.images[:3], {"methods": {"integrated_gradients": {"n_steps": 4}}})
    target = tmp_path / "out"
    _write_folder_atomically(report, str(target), {"gate.json": "{}"}, write_artifacts)
    assert (target / "summary.json").is_file() and (target / "gate.json").is_file()

    def crash(report, folder):
        write_artifacts(report, folder)
        raise KeyboardInterrupt  # interrupted after writing part of the new folder

    (target / "marker").write_text("previous")
    with pytest.raises(KeyboardInterrupt):
        _write_folder_atomically(report, str(target), {}, crash)
    assert (target / "marker").read_text() == "previous"  # the previous folder is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left behind


def test_same_inputs_give_identical_metrics(small_cnn, shapes16):
    _, probe = shapes16
    config = {
        "seed": 7,
        "methods": {
            "integrated_gradients": {"n_steps": "auto"},
            "gradient_shap": {"n_samples": 8},
            "occlusion": {"sliding_window_shapes": [3, 4, 4], "strides": [3, 4, 4]},
        },
    }
    first = audit(small_cnn, probe.images[:6], config)
    second = audit(small_cnn, probe.images[:6], config)
    strip = lambda m: {k: v for k, v in m.items() if not k.endswith("seconds")}  # noqa: E731
    assert strip(first.metrics()) == strip(second.metrics())
    for name in first.methods:
        assert np.array_equal(first.methods[name].attributions, second.methods[name].attributions)


def test_interrupted_audit_resumes_from_cached_batches(small_cnn, shapes16, tmp_path, monkeypatch):
    from mlflow_xai.engine import BatchAttributor

    _, probe = shapes16
    x = probe.images[:10]
    config = {"batch_size": 3, "methods": {"integrated_gradients": {"n_steps": 8}, "saliency": {}}}
    reference = audit(small_cnn, x, config)

    real_run = BatchAttributor.run
    calls = []

    def failing_run(self, start, *args):
        calls.append(start)
        if len(calls) == 3:
            raise RuntimeError("worker lost")
        return real_run(self, start, *args)

    monkeypatch.setattr(BatchAttributor, "run", failing_run)
    with pytest.raises(RuntimeError, match="worker lost"):
        audit(small_cnn, x, config, cache_dir=tmp_path / "cache")
    (folder,) = (tmp_path / "cache").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["batch-000000000.npz", "batch-000000003.npz"]

    calls.clear()
    resumed = audit(small_cnn, x, config, cache_dir=tmp_path / "cache")
    assert calls == [6, 9]  # only the batches that had not finished
    strip = lambda m: {k: v for k, v in m.items() if not k.endswith("seconds")}  # noqa: E731
    assert strip(resumed.metrics()) == strip(reference.metrics())
    for name in reference.methods:
        assert np.array_equal(resumed.methods[name].attributions, reference.methods[name].attributions)


def test_cache_is_keyed_by_model_config_and_probe(small_cnn, shapes16, tmp_path):
    import copy

    import torch

    _, probe = shapes16
    config = {"batch_size": 4, "methods": {"saliency": {}}}
    audit(small_cnn, probe.images[:4], config, cache_dir=tmp_path)
    other = copy.deepcopy(small_cnn)
    with torch.no_grad():
        other.head.bias.add_(1.0)
    audit(other, probe.images[:4], config, cache_dir=tmp_path)
    audit(small_cnn, probe.images[:4], {**config, "seed": 1}, cache_dir=tmp_path)
    audit(small_cnn, probe.images[1:5], config, cache_dir=tmp_path)
    audit(small_cnn, probe.images[:4], config, cache_dir=tmp_path)  # the first again: reused
    assert len(list(tmp_path.iterdir())) == 4


def test_concurrent_identical_audits_share_a_cache_without_clashing(tmp_path):
    """Two audits of the same model, config and probe set (e.g. two CI jobs) use one cache folder."""
    import threading

    from mlflow_xai.engine import BatchCache, BatchResult, MethodBatch

    cache = BatchCache(tmp_path / "key")
    result = BatchResult(
        0,
        np.array(["a", "b"]),
        np.array([1, 2]),
        np.array([1, 2]),
        {"saliency": MethodBatch(values=np.ones((2, 3), np.float16), seconds=0.1)},
    )
    errors = []

    def writer():
        try:
            for _ in range(200):
                cache.put(result)
        except Exception as exc:  # noqa: BLE001 - any error is the failure this test looks for
            errors.append(exc)

    def finisher():
        try:
            for _ in range(200):
                cache.clear()
                cache.remove()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=t) for t in (writer, writer, finisher)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    cache.put(result)
    loaded = cache.get(0)
    assert loaded.ids.tolist() == ["a", "b"] and loaded.methods["saliency"].values.shape == (2, 3)
