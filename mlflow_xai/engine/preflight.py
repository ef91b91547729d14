"""Checks on the first probe samples, made before any batch: what would otherwise fail midway.
"""

from __future__ import annotations

import numpy as np
import torch

from mlflow_xai.config.audit_config import AuditConfig
from mlflow_xai.config.targets import TopTargets, target_entries
from mlflow_xai.errors import ConfigError, ModelError, ProbeError
from mlflow_xai.model.handle import ModelHandle, training_mode_ops
from mlflow_xai.probe.probe_set import ProbeSet

_REEXPORT = (
    "call model.eval() before mlflow.pytorch.log_model and give an input_example of 2 or more rows "
    '(the batch dimension is then dynamic), or log it with serialization_format="pickle"'
)


def _check_fits(handle: ModelHandle, probe: ProbeSet, dtype: torch.dtype) -> int:
    """Run the first samples through the model before any compute: a shape mismatch, a graph
    exported with a static batch of 1, a graph exported in training mode and an output that is
    random (two passes over the same batch disagree) each fail here, before a run is opened.

    Returns the number of classes the model scores."""
    x = torch.from_numpy(np.array(probe.inputs[:2])).to(handle.device, dtype)
    x = x.expand(2, *x.shape[1:]) if len(x) == 1 else x  # methods batch many points even for one sample
    try:
        with torch.no_grad():
            classes = int(handle.scores(x[:1]).shape[1])
    except ModelError:
        raise
    except Exception as exc:  # the model's own error says best what it expected
        raise ProbeError(
            f"the model cannot take probe inputs of shape {list(probe.input_shape)} "
            f"(per sample): {type(exc).__name__}: {exc}"
        ) from None
    training_ops = training_mode_ops(handle.module)
    if training_ops:
        raise ModelError(
            "the model is a graph exported in training mode (MLflow's default pt2 format): it runs "
            f"{', '.join(training_ops)} with training=True, so its outputs depend on the batch or on "
            "chance, and an exported graph cannot be switched to eval mode; its attributions would "
            f"not be the deployed model's. Re-log it: {_REEXPORT}"
        )
    try:
        with torch.no_grad():
            first, second = handle.scores(x), handle.scores(x)
    except ModelError:
        raise
    except Exception as exc:
        if handle.exported:
            raise ModelError(
                "the model is a graph exported with a static batch of 1 (MLflow's default pt2 format, "
                "logged with a one-row input_example): a pass over 2 samples fails "
                f"({type(exc).__name__}: {_first_line(exc)}), and an audit evaluates many inputs per "
                f"pass. Re-log it: {_REEXPORT}"
            ) from None
        raise ProbeError(
            f"the model takes one input but not a batch of 2: {type(exc).__name__}: {exc}"
        ) from None
    # Dropout changes outputs by their own size; a GPU's non-deterministic kernels by far less.
    if float((first - second).abs().max()) > 1e-4 * max(float(first.abs().max()), 1e-12):
        raise ModelError(
            "the model's output is random: two passes over the same 2 inputs disagree (by up "
            f"to {float((first - second).abs().max()):.3g}), so no attribution of it can be repeated. "
            "Dropout or noise left on in forward()? Put the model in eval mode before logging it"
        )
    return classes


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _check_targets(cfg: AuditConfig, probe: ProbeSet, classes: int) -> None:
    """Every fixed target, ``top: k``, every class name and every probe label must fit the model's
    classes, whatever the target: labels also score the accuracy, and a 1-based label would be
    scored as the wrong class."""
    allowed = f"the model has {classes} classes, so a class must be 0 to {classes - 1}"
    spec = cfg.target
    for entry in target_entries(spec):
        if type(entry) is int and entry >= classes:
            raise ProbeError(f"target class {entry} is out of range: {allowed}")
    if isinstance(spec, TopTargets) and spec.top > classes:
        raise ProbeError(f"target top: {spec.top} asks for more classes than the model has ({classes})")
    if cfg.class_names is not None and max(cfg.class_names) >= classes:
        raise ProbeError(
            f"class_names names class {max(cfg.class_names)}, but {allowed}; give the names of this "
            "model's classes"
        )
    if probe.labels is not None:
        bad = np.flatnonzero((probe.labels < 0) | (probe.labels >= classes))
        if len(bad):
            first = bad[0]
            raise ProbeError(
                f"label {int(probe.labels[first])} of probe sample {str(probe.ids[first])!r} is out of "
                f"range: {allowed} ({len(bad)} such label(s)); labels are class indices of the model, "
                "counted from 0"
            )


def _check_checks(cfg: AuditConfig, probe: ProbeSet) -> None:
    """Refuse a check that cannot apply to the probe's inputs: pixel and patch groups and SSIM need
    images."""
    if probe.is_text:
        configured = [
            name for name in ("deletion_insertion", "infidelity", "sensitivity", "randomisation")
            if getattr(cfg.checks, name) is not None
        ]  # fmt: skip
        if configured:
            raise ConfigError(
                f"checks {', '.join(configured)} perturb image or tabular inputs and do not apply to a text "
                "probe yet; text audits check completeness at the embedding layer"
            )
        if cfg.distributed is not None and cfg.distributed.engine == "ray":
            raise ConfigError("text probes are audited by the local engine; drop distributed.engine: ray")
    elif cfg.checks.eraser is not None:
        raise ConfigError(
            "checks.eraser ranks tokens and applies to text probes (token ids); the probe's inputs have "
            f"shape {list(probe.input_shape)}: use checks.deletion_insertion"
        )
    randomisation = cfg.checks.randomisation
    if randomisation is not None and randomisation.similarity == "ssim" and len(probe.input_shape) != 3:
        raise ConfigError(
            "checks.randomisation.similarity 'ssim' compares images (C, H, W), but the probe's inputs "
            f"have shape {list(probe.input_shape)}; use spearman, spearman_abs or top_k"
        )
    check = cfg.checks.deletion_insertion
    if check is not None and check.removal == "noisy_linear" and len(probe.input_shape) != 3:
        raise ConfigError(
            "checks.deletion_insertion.removal 'noisy_linear' imputes features from their neighbouring "
            f"pixels in images (C, H, W), but the probe's inputs have shape {list(probe.input_shape)}; "
            "use removal: baseline"
        )
    if check is not None and check.features != "elements" and len(probe.input_shape) != 3:
        raise ConfigError(
            f"checks.deletion_insertion.features {check.features!r} groups the pixels of images "
            f"(C, H, W), but the probe's inputs have shape {list(probe.input_shape)}; use features: "
            "elements"
        )
