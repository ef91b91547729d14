"""Batch results gathered into per-sample arrays, attributions in memory-mapped files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mlflow_xai.checks.completeness import CompletenessResult
from mlflow_xai.config.audit_config import AuditConfig
from mlflow_xai.engine.batch import BatchAttributor, BatchResult
from mlflow_xai.probe.memory import release_pages
from mlflow_xai.probe.probe_set import ProbeSet
from mlflow_xai.report.audit_report import MethodResult


class BatchAccumulator:
    """Gathers batch results into per-sample arrays; attributions go to memory-mapped files."""

    def __init__(self, attributor: BatchAttributor, probe: ProbeSet, workdir: Path) -> None:
        n = len(probe)
        self.n = n
        self.ids = probe.ids
        self.seen = np.zeros(n, dtype=bool)
        self.predictions = np.empty(n, dtype=np.int64)
        self.slots = attributor.slots
        self.targets = np.empty((n, len(self.slots)), dtype=np.int64)
        self.result_keys = attributor.result_keys
        self.attributions = {
            key: np.lib.format.open_memmap(
                workdir / f"{key.replace('/', '--')}.npy",
                mode="w+",
                dtype=attributor.mask_dtype,
                shape=(n, *probe.input_shape),
            )
            for key in self.result_keys
        }
        checked = [
            key for key, (name, _) in self.result_keys.items() if attributor.methods[name].has_completeness
        ]
        self.sums = {key: np.full(n, np.nan) for key in checked}
        self.at_input = {key: np.full(n, np.nan) for key in checked}
        self.at_baseline = {key: np.full(n, np.nan) for key in checked}
        self.output_eps = torch.finfo(attributor.dtype).eps  # F(x) and F(x') are in the model's dtype
        self.seconds = dict.fromkeys(self.result_keys, 0.0)
        self.checks_seconds: dict[str, dict[str, float]] = {key: {} for key in self.result_keys}
        self.extras: dict[str, dict[str, np.ndarray]] = {key: {} for key in self.result_keys}

    def add(self, result: BatchResult) -> None:
        rows = slice(result.start, result.start + len(result.ids))
        if not np.array_equal(self.ids[rows], result.ids):
            raise RuntimeError(f"batch at {result.start} holds ids that are not the probe set's there")
        if self.seen[rows].any():
            raise RuntimeError(f"batch at {result.start} arrived twice")
        self.seen[rows] = True
        self.predictions[rows] = result.predictions
        self.targets[rows] = result.targets.reshape(len(result.ids), -1)
        for name, m in result.methods.items():
            self.seconds[name] += m.seconds
            for check, seconds in m.checks_seconds.items():
                self.checks_seconds[name][check] = self.checks_seconds[name].get(check, 0.0) + seconds
            self.attributions[name][rows] = m.values
            release_pages(self.attributions[name])  # written pages live on in the file, not in RSS
            for key, value in m.extras.items():
                column = self.extras[name].get(key)
                if column is None:
                    column = np.zeros((self.n, *value.shape[1:]), dtype=value.dtype)
                    self.extras[name][key] = column
                column[rows] = value
            if name in self.sums:
                self.sums[name][rows] = m.attribution_sum
                self.at_input[name][rows] = m.output_at_input
                self.at_baseline[name][rows] = m.output_at_baseline

    def method_results(self, cfg: AuditConfig) -> dict[str, MethodResult]:
        missing = np.flatnonzero(~self.seen)
        if len(missing):
            raise RuntimeError(
                f"{len(missing)} probe samples were never attributed, e.g. {self.ids[missing[0]]}"
            )
        results = {}
        for name, values in self.attributions.items():
            completeness = None
            if name in self.sums:
                completeness = CompletenessResult.compute(
                    self.sums[name],
                    self.at_input[name],
                    self.at_baseline[name],
                    tolerance=cfg.checks.completeness.tolerance,
                    degenerate_floor=cfg.checks.completeness.degenerate_floor,
                    eps=self.output_eps,
                )
            values.flush()
            method, k = self.result_keys[name]
            results[name] = MethodResult(
                name,
                values,
                self.seconds[name],
                completeness,
                self.extras[name],
                method=method,
                target=self.slots[k] if len(self.slots) > 1 else None,
                targets=self.targets[:, k],
                checks_seconds=self.checks_seconds[name],
            )
        return results
