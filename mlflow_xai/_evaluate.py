"""The heavy half of the evaluator: rebuild tensors from MLflow's data, audit, log."""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np

from mlflow_xai.config import load_config
from mlflow_xai.engine import audit
from mlflow_xai.errors import ConfigError, ProbeError
from mlflow_xai.probe import ProbeSet
from mlflow_xai.tracking import log_report


def run_evaluation(
    *, model: Any, dataset: Any, run_id: str, evaluator_config: dict[str, Any], log_metrics: bool
) -> tuple[dict[str, float], dict[str, Any]]:
    options = dict(evaluator_config)
    source = options.pop("config", None)
    config = load_config(source, **options)
    module = model.get_raw_model()
    shape = tuple(config.input_shape) if config.input_shape else _signature_shape(model)
    inputs = _rebuild_inputs(dataset.features_data, shape)
    labels = dataset.labels_data
    if labels is not None:
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ProbeError(f"targets must be integer class indices, got {labels.dtype}")
    report = audit(module, ProbeSet(inputs, labels), config)
    log_report(report, run_id, log_metrics=log_metrics)
    return report.metrics(), {}


def _signature_shape(model: Any) -> tuple[int, ...] | None:
    """The per-sample shape of the model's logged tensor input signature, if it has one."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.is_tensor_spec():
        return None
    specs = schema.inputs
    if len(specs) != 1:
        raise ProbeError(
            f"the model's signature has {len(specs)} tensor inputs; only single-input models are "
            "audited. Set input_shape in the config to the shape of that one input"
        )
    shape = tuple(specs[0].shape)
    if len(shape) < 2 or any(d < 0 for d in shape[1:]):
        raise ProbeError(
            f"the model's signature shape {shape} does not fix a per-sample shape; set input_shape "
            "in the config, e.g. input_shape: [3, 32, 32]"
        )
    return shape[1:]


def _rebuild_inputs(features: Any, shape: tuple[int, ...] | None) -> np.ndarray:
    """MLflow hands numpy data over in 2-D (N, F); images are rebuilt to (N, *shape)."""
    if hasattr(features, "columns"):  # a DataFrame
        frame = features
        if len(frame.columns) == 1 and len(frame) and isinstance(frame.iloc[0, 0], (list, np.ndarray)):
            array = np.stack([np.asarray(v, dtype=np.float32) for v in frame.iloc[:, 0]])
        else:
            array = frame.to_numpy()
    else:
        array = np.asarray(features)
    if not np.issubdtype(array.dtype, np.floating):
        raise ProbeError(f"evaluation data must be floating point, got {array.dtype}")
    if shape is None:
        if array.ndim == 2:
            return array
        raise ConfigError("cannot tell the input shape: set input_shape in the xai evaluator config")
    if prod(array.shape[1:]) != prod(shape):
        raise ProbeError(
            f"evaluation data has {prod(array.shape[1:])} values per sample but the input shape "
            f"{list(shape)} needs {prod(shape)}; fix the data or input_shape"
        )
    return np.ascontiguousarray(array.reshape(len(array), *shape))


__all__ = ["run_evaluation"]
