"""Write an AuditReport to a local folder: the one tree that is then logged under ``xai/``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from mlflow_xai._version import __version__
from mlflow_xai.config import dump_config
from mlflow_xai.ig_plots import ig_convergence_figures
from mlflow_xai.report import AuditReport
from mlflow_xai.viz import attribution_sheet, is_image_shape


def write_artifacts(report: AuditReport, folder: str | Path) -> Path:
    """Fill ``folder`` with masks, sheets, summary.json, per_sample.csv and config.yaml."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = report.probe
    k = min(report.config.artifacts.sheet_samples, len(probe))
    for name, result in report.methods.items():
        method_dir = folder / name
        method_dir.mkdir(exist_ok=True)
        np.savez_compressed(
            method_dir / "masks.npz", attributions=result.attributions, ids=probe.ids.astype(str)
        )
        if k and is_image_shape(probe.input_shape):
            captions = [
                f"{probe.ids[i]}\nlabel {_label(probe, i)} pred {report.predictions[i]}"
                for i in range(k)
            ]
            attribution_sheet(
                probe.inputs[:k],
                result.attributions[:k],
                method_dir / "sheet.png",
                title=f"{name}: first {k} probe samples (target = {report.config.target})",
                captions=captions,
                masks=None if probe.masks is None else probe.masks[:k],
            )
    if report.ig_profiles is not None:
        ig_convergence_figures(
            report.ig_profiles,
            folder / "integrated_gradients",
            completeness_tolerance=report.config.checks.completeness.tolerance,
            output_label=f"{report.config.output} of the target class",
        )
    rows = report.per_sample_rows()
    with open(folder / "per_sample.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "mlflow_xai_version": __version__,
        "verdict": report.verdict,
        "methods": {name: r.verdict for name, r in report.methods.items()},
        "metrics": report.metrics(),
        "probe": {"samples": len(probe), "sha256": report.probe_sha256},
        "device": report.device,
        "exported_model": report.exported_model,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (folder / "config.yaml").write_text(dump_config(report.config), encoding="utf-8")
    return folder


def _label(probe, i: int) -> str:
    return "-" if probe.labels is None else str(int(probe.labels[i]))
