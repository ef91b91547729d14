"""Where an audit's numbers come from: package versions, device, precision, seed, probe hash, config."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import torch

from mlflow_xai._version import __version__
from mlflow_xai.config.loading import dump_config
from mlflow_xai.report.audit_report import AuditReport

PACKAGES = ("mlflow", "torch", "captum", "numpy")


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def provenance(report: AuditReport) -> dict[str, Any]:
    """A JSON-ready record of what produced ``report``; ``config_yaml`` is the config as run."""
    versions = {"mlflow-xai": __version__, **{name: package_version(name) for name in PACKAGES}}
    return {
        "versions": versions,
        "device": report.device,
        "compute_dtype": report.dtype,
        "mask_dtype": report.config.artifacts.mask_dtype,
        "seed": report.config.seed,
        # TF32 matmuls change float32 results on Ampere+ GPUs; recorded wherever the audit ran.
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "probe_samples": len(report.probe),
        "probe_sha256": report.probe_sha256,
        "exported_model": report.exported_model,
        "config_yaml": dump_config(report.config),
    }
