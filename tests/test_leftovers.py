"""A failed or finished audit leaves nothing where it does not belong."""

from __future__ import annotations

import os
import stat
import time

import numpy as np
from helpers import log_pytorch_model

from mlflow_xai.cli import main
from mlflow_xai.engine import BatchCache, default_cache_dir


def _age(folder, days: float) -> None:
    then = time.time() - days * 86400
    for path in [*folder.iterdir(), folder]:
        os.utime(path, (then, then))


def test_prune_removes_only_stale_cache_folders(tmp_path):
    stale, fresh, foreign = tmp_path / ("a" * 24), tmp_path / ("b" * 24), tmp_path / "my-notes"
    for folder in (stale, fresh, foreign):
        folder.mkdir()
        (folder / "batch-000000000.npz").write_bytes(b"x")
    _age(stale, 8)
    _age(foreign, 30)  # not a cache folder's name: never touched, whatever its age
    assert BatchCache.prune(tmp_path, max_age_days=7) == [stale]
    assert not stale.exists() and fresh.exists() and foreign.exists()
    assert BatchCache.prune(tmp_path / "missing", max_age_days=7) == []


def test_the_cli_keeps_caches_in_the_user_cache_directory_and_prunes_them(
    tracking_store, small_cnn, shapes16, tmp_path, user_cache_dir, capsys
):
    _, probe = shapes16
    uri = log_pytorch_model(small_cnn, probe.images[:2])
    np.savez(tmp_path / "probe.npz", inputs=probe.images[:4], labels=probe.labels[:4])
    root = default_cache_dir()
    assert root == user_cache_dir / "mlflow-xai" / "batches"
    stale = root / ("c" * 24)
    stale.mkdir(parents=True)
    (stale / "batch-000000000.npz").write_bytes(b"x")
    _age(stale, 30)
    (tmp_path / "c.yaml").write_text(
        "methods:\n  integrated_gradients:\n    n_steps: 4\nchecks:\n  completeness:\n    tolerance: 100.0\n"
    )
    out_dir = tmp_path / "out"
    old_umask = os.umask(0o022)
    try:
        args = ["audit", "--model-uri", uri, "--probe", "probe.npz", "--config", "c.yaml"]
        assert main([*args, "--output-dir", str(out_dir)]) == 0
    finally:
        os.umask(old_umask)
    assert not stale.exists()
    assert not (tmp_path / ".mlflow-xai-cache").exists()
    assert stat.S_IMODE(out_dir.stat().st_mode) == 0o755  # as mkdir makes it, not mkdtemp's 0700
