"""The ``xai`` evaluator for ``mlflow.models.evaluate``.

MLflow calls every registered evaluator for every evaluation when ``evaluators=None`` (sklearn
models too), so this module imports nothing heavy at import time and declines non-PyTorch models
before torch is imported.
"""

from __future__ import annotations

from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator

MODEL_TYPES = ("image_classifier",)


class XaiEvaluator(ModelEvaluator):
    @classmethod
    def can_evaluate(cls, *, model_type, evaluator_config, **kwargs) -> bool:
        return model_type in MODEL_TYPES

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
        if model is None or "pytorch" not in getattr(model.metadata, "flavors", {}):
            return None  # not a PyTorch model: decline, and let other evaluators do their work

        from mlflow_xai._evaluate import run_evaluation  # torch and captum load only from here

        metrics, artifacts = run_evaluation(
            model=model, dataset=dataset, run_id=run_id, evaluator_config=evaluator_config or {},
            # With a model id, mlflow.models.evaluate logs the returned metrics itself.
            log_metrics=kwargs.get("model_id") is None,
        )
        return EvaluationResult(metrics=metrics, artifacts=artifacts)


