"""Finished batches kept on disk, so that an interrupted audit resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path

import torch
import torch.nn as nn

from mlflow_xai.config.audit_config import AuditConfig
from mlflow_xai.config.loading import dump_config
from mlflow_xai.engine.batch import BatchResult


def default_cache_dir() -> Path:
    """Where the command line keeps resume caches: the user cache directory (platformdirs), e.g.
    ``~/.cache/mlflow-xai/batches`` or ``$XDG_CACHE_HOME/mlflow-xai/batches``, never the working
    directory a CI job checks out."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("mlflow-xai")) / "batches"


class BatchCache:
    """Finished batches on disk, in a folder named by what determines them (model, config, probe)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @staticmethod
    def prune(root: str | Path, *, max_age_days: float) -> list[Path]:
        """Remove the cache folders under ``root`` that nothing has written for ``max_age_days``:
        a failed audit whose config then changed is never resumed. Returns what was removed."""
        root = Path(root)
        if not root.is_dir():
            return []
        cutoff = time.time() - max_age_days * 86400
        removed = []
        for folder in root.iterdir():
            # Only the folders BatchCache.open names (24 hex digits): --cache-dir may be shared.
            if not re.fullmatch(r"[0-9a-f]{24}", folder.name) or not folder.is_dir():
                continue
            try:
                times = [f.stat().st_mtime for f in folder.iterdir()] or [folder.stat().st_mtime]
            except FileNotFoundError:  # a concurrent audit finished and removed it
                continue
            if max(times) < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    @classmethod
    def open(cls, root: str | Path, model: nn.Module, cfg: AuditConfig, probe_sha256: str) -> BatchCache:
        digest = hashlib.sha256()
        digest.update(model_fingerprint(model).encode())
        digest.update(dump_config(cfg).encode())
        digest.update(probe_sha256.encode())
        folder = Path(root) / digest.hexdigest()[:24]
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder)

    def _path(self, start: int) -> Path:
        return self.folder / f"batch-{start:09d}.npz"

    def get(self, start: int) -> BatchResult | None:
        path = self._path(start)
        return BatchResult.load(path) if path.is_file() else None

    def put(self, result: BatchResult) -> None:
        # A concurrent identical audit that finished may remove the (then empty) folder at any
        # moment; make it again and retry.
        for attempt in range(5):
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                result.save(self._path(result.start))
                return
            except (FileNotFoundError, FileExistsError):  # removed between the check and the write
                if attempt == 4:
                    raise

    def __len__(self) -> int:
        return len(list(self.folder.glob("batch-*.npz")))

    def clear(self) -> None:
        """Forget every cached batch (a fresh audit), keeping the folder."""
        for path in self.folder.glob("batch-*.npz"):
            path.unlink(missing_ok=True)  # a concurrent identical audit may clear it too

    def remove(self) -> None:
        """Delete the cache folder (the audit finished and needs no resuming)."""
        self.clear()
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            try:
                self.folder.rmdir()
            except OSError:  # a concurrent identical audit wrote into it meanwhile: leave it
                pass


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's class, parameter and buffer names, shapes and values."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
