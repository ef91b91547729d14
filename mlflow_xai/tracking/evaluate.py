"""The heavy half of the evaluator: rebuild tensors from MLflow's data, audit, log."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from math import prod
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from mlflow_xai.config.loading import load_config
from mlflow_xai.engine.run import audit
from mlflow_xai.errors import ConfigError, ProbeError
from mlflow_xai.tracking.log import log_report


def run_evaluation(
    *, model: Any, dataset: Any, run_id: str, evaluator_config: dict[str, Any], log_metrics: bool
) -> tuple[dict[str, float], dict[str, Any]]:
    options = dict(evaluator_config)
    source = options.pop("config", None)
    config = load_config(source, **options)
    module, tokenizer = _module_and_tokenizer(model.get_raw_model())
    labels = dataset.labels_data
    if labels is not None:
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ProbeError(f"targets must be integer class indices, got {labels.dtype}")
    texts = text_column(dataset.features_data)
    if texts is not None:
        report = audit(module, _text_probe(texts, labels, config, tokenizer), config)
    else:
        shape = tuple(config.input_shape) if config.input_shape else _signature_shape(model)
        inputs, feature_names = evaluation_inputs(dataset.features_data, shape)
        # Raw data: probe.preprocess (and its scale for integer data) applies as for any probe source.
        report = audit(module, inputs, config, labels=labels, feature_names=feature_names)
    with tempfile.TemporaryDirectory(prefix="mlflow-xai-") as folder:
        paths = log_report(report, run_id, log_metrics=log_metrics, folder=folder)
        artifacts = evaluation_artifacts(run_id, paths, local_root=folder)
    return report.metrics(), artifacts


#: Text files MLflow has no own artifact class for: their content is the text.
_TEXT_SUFFIXES = (".html", ".yaml", ".yml", ".txt", ".md", ".xml")


def evaluation_artifacts(
    run_id: str, paths: Iterable[str], *, local_root: str | Path | None = None
) -> dict[str, Any]:
    """One MLflow ``EvaluationArtifact`` per logged file, keyed by its path in the run.

    The key keeps the extension (``xai/report.html``, ``xai/integrated_gradients/masks.npz``): it
    is the path ``MlflowClient.list_artifacts`` shows, and without it ``masks.npz`` and a future
    ``masks.png`` would share a name. The URI is the file in the run's artifact store. The class
    follows the suffix: MLflow's image, JSON, CSV, ``.npy`` and text classes, ours for ``.npz`` (a
    dict of arrays) and raw bytes for any other kind.

    ``local_root`` is the folder that was uploaded as ``xai/``: the content of every file but the
    masks is read from it now, as MLflow's own evaluators do, because MLflow's artifact classes
    save (``EvaluationResult.save``) only content already loaded. Masks (``.npz``, the one kind
    that grows with the probe set) load from the URI on first access instead, and save that way.
    """
    # mlflow's artifact classes import matplotlib.pyplot: only here, never on the can_evaluate path.
    from mlflow.models.evaluation.artifacts import (
        CsvEvaluationArtifact,
        ImageEvaluationArtifact,
        JsonEvaluationArtifact,
        NumpyEvaluationArtifact,
        TextEvaluationArtifact,
    )
    from mlflow.tracking.artifact_utils import get_artifact_uri
    from mlflow.utils.uri import append_to_uri_path

    from mlflow_xai.tracking.evaluation_artifacts import BytesEvaluationArtifact, NpzEvaluationArtifact

    by_suffix = {
        ".png": ImageEvaluationArtifact,
        ".jpg": ImageEvaluationArtifact,
        ".jpeg": ImageEvaluationArtifact,
        ".json": JsonEvaluationArtifact,
        ".csv": CsvEvaluationArtifact,
        ".npy": NumpyEvaluationArtifact,
        ".npz": NpzEvaluationArtifact,
        **dict.fromkeys(_TEXT_SUFFIXES, TextEvaluationArtifact),
    }
    root = get_artifact_uri(run_id)  # one store lookup, not one per file
    artifacts = {}
    for path in paths:
        kind = by_suffix.get(PurePosixPath(path).suffix.lower(), BytesEvaluationArtifact)
        artifact = kind(uri=append_to_uri_path(root, path))
        if local_root is not None and kind is not NpzEvaluationArtifact:
            artifact._load(Path(local_root, *PurePosixPath(path).parts[1:]))
        artifacts[path] = artifact
    return artifacts


def text_column(features: Any) -> list[str] | None:
    """The texts of a DataFrame whose one feature column holds strings, else None."""
    if not hasattr(features, "columns") or len(features.columns) != 1 or not len(features):
        return None
    column = features.iloc[:, 0]
    if not all(isinstance(value, str) for value in column):
        return None
    return column.tolist()


def _module_and_tokenizer(raw: Any) -> tuple[Any, Any]:
    """The PyTorch module to audit and, for a Hugging Face pipeline, its tokenizer."""
    import torch.nn as nn

    inner = getattr(raw, "model", None)
    if not isinstance(raw, nn.Module) and isinstance(inner, nn.Module):  # a transformers pipeline
        return inner.eval(), getattr(raw, "tokenizer", None)
    return raw, None


def _text_probe(texts: list[str], labels: np.ndarray | None, config: Any, tokenizer: Any = None) -> Any:
    """A text probe of the evaluation data's texts, tokenized by ``probe.tokenizer`` or else by the
    model's own (a pipeline's)."""
    from mlflow_xai.probe.text import load_tokenizer, tokenized_probe

    if config.probe.tokenizer is not None:
        tokenizer = load_tokenizer(config.probe.tokenizer)
    if tokenizer is None:
        raise ConfigError(
            "the evaluation data is a column of texts; tokenizing them needs probe.tokenizer: a folder "
            "holding the model's tokenizer saved with save_pretrained (nothing is downloaded)"
        )
    return tokenized_probe(texts, tokenizer, labels=labels, max_length=config.probe.max_length)


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


def evaluation_inputs(features: Any, shape: tuple[int, ...] | None) -> tuple[np.ndarray, list[str] | None]:
    """MLflow's evaluation data as probe inputs (N, *shape), and feature names for tabular data.

    MLflow hands numpy data over in 2-D (N, F): images are rebuilt to (N, *shape). A DataFrame is
    either one column holding an array per row (any shape, stacked as they are) or tabular columns,
    whose names become the feature names. Values keep their dtype: integer images are scaled by
    ``probe.preprocess.scale`` later, never by guess here.
    """
    feature_names = None
    if hasattr(features, "columns"):  # a DataFrame
        frame = features
        first = frame.iloc[0, 0] if len(frame) and len(frame.columns) else None
        if len(frame.columns) == 1 and isinstance(first, (list, tuple, np.ndarray)):
            cells = [np.asarray(v) for v in frame.iloc[:, 0]]
            shapes = {c.shape for c in cells}
            if len(shapes) != 1:
                raise ProbeError(
                    f"the DataFrame column {str(frame.columns[0])!r} holds arrays of {len(shapes)} "
                    f"different shapes ({', '.join(str(list(s)) for s in sorted(shapes)[:3])}); every "
                    "row must hold an array of one shape"
                )
            array = np.stack(cells)
        else:
            array = frame.to_numpy()
            if array.dtype == object:
                raise ProbeError(
                    "evaluation data is a DataFrame with non-numeric columns; give numeric columns "
                    "(tabular features) or one column holding an array per row"
                )
            feature_names = [str(c) for c in frame.columns]
    else:
        array = np.asarray(features)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ProbeError(f"evaluation data must be numbers, got {array.dtype}")
    if shape is None:
        if array.ndim >= 2:  # tabular, or a column of arrays that already have their shape
            return array, feature_names
        raise ConfigError("cannot tell the input shape: set input_shape in the xai evaluator config")
    if prod(array.shape[1:]) != prod(shape):
        raise ProbeError(
            f"evaluation data has {prod(array.shape[1:])} values per sample but the input shape "
            f"{list(shape)} needs {prod(shape)}; fix the data or input_shape"
        )
    if tuple(array.shape[1:]) == tuple(shape):
        return array, feature_names if array.ndim == 2 else None
    return np.ascontiguousarray(array.reshape(len(array), *shape)), None


__all__ = ["evaluation_artifacts", "evaluation_inputs", "run_evaluation"]
