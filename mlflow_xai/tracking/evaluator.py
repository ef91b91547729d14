"""The ``xai`` evaluator for ``mlflow.models.evaluate``.

MLflow calls every registered evaluator for every evaluation when ``evaluators=None`` (sklearn
models too), so this module imports nothing heavy at import time: ``can_evaluate`` answers from the
model type alone and ``evaluate`` declines non-PyTorch models before torch is imported.
"""

from __future__ import annotations

import logging
from typing import Any

from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator

from mlflow_xai.tracking.evaluation_artifacts import BytesEvaluationArtifact, NpzEvaluationArtifact

#: MLflow's standard ``classifier`` (tabular rows, or images when ``input_shape`` or the model's
#: tensor signature gives an image shape) and our own ``image_classifier``, which keeps MLflow's
#: built-in evaluators out and makes targets optional. Regressors, text and retrieval models have
#: no class score whose attribution we could check.
MODEL_TYPES = ("classifier", "image_classifier")
PYTORCH_FLAVOR = "pytorch"
TRANSFORMERS_FLAVOR = "transformers"  # a pipeline: its PyTorch model and tokenizer are audited
_log = logging.getLogger(__name__)


def _declined(reason: str, evaluator_config: Any) -> None:
    """Say why xai declines: as a warning when the user configured xai (they meant it to run, and
    MLflow's own error only says that no evaluator could evaluate the model), quietly otherwise
    (``evaluators=None`` asks xai about every model, and most are not ours to audit)."""
    level = logging.WARNING if evaluator_config else logging.DEBUG
    _log.log(level, "the xai evaluator declines: %s", reason)


class XaiEvaluator(ModelEvaluator):
    @classmethod
    def can_evaluate(cls, *, model_type, evaluator_config, **kwargs) -> bool:
        """Whether xai can audit ``model_type``.

        MLflow (3.17) passes only the model type and this evaluator's config here, not the model or
        its metadata, so whether it is a PyTorch model is decided in ``evaluate``, which declines
        other flavors by returning None.
        """
        if model_type in MODEL_TYPES:
            return True
        _declined(
            f"model_type={model_type!r} cannot be audited; xai audits PyTorch models with model_type "
            f"{' or '.join(repr(t) for t in MODEL_TYPES)}",
            evaluator_config,
        )
        return False

    def evaluate(
        self,
        *,
        model_type,
        dataset,
        run_id,
        evaluator_config,
        model=None,
        extra_metrics=None,
        custom_artifacts=None,
        predictions=None,
        **kwargs,
    ) -> EvaluationResult | None:
        if model is None:
            _declined(
                "no model to audit (the evaluation data holds static predictions); pass the URI of a "
                "model logged with mlflow.pytorch.log_model",
                evaluator_config,
            )
            return None
        # The flavors come from the MLmodel file MLflow has already read: no import needed to tell.
        flavors = sorted(getattr(getattr(model, "metadata", None), "flavors", None) or {})
        if PYTORCH_FLAVOR not in flavors and TRANSFORMERS_FLAVOR not in flavors:
            _declined(
                f"the model has the flavors {flavors}, not {PYTORCH_FLAVOR!r}; xai audits models "
                "logged with mlflow.pytorch.log_model, and text classifiers logged with "
                "mlflow.transformers.log_model",
                evaluator_config,
            )
            return None  # let the other evaluators do their work

        from mlflow_xai.tracking.evaluate import run_evaluation

        metrics, artifacts = run_evaluation(
            model=model, dataset=dataset, run_id=run_id, evaluator_config=evaluator_config or {},
            # With a model id, mlflow.models.evaluate logs the returned metrics itself.
            log_metrics=kwargs.get("model_id") is None,
        )
        return EvaluationResult(metrics=metrics, artifacts=artifacts, run_id=run_id)


__all__ = ["MODEL_TYPES", "BytesEvaluationArtifact", "NpzEvaluationArtifact", "XaiEvaluator"]
