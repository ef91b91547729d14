"""Parameters of the perturbation methods: Feature Ablation, Shapley Value Sampling, KernelShap, LIME.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from mlflow_xai.attribution.parameters.common import (
    _PER_EVAL,
    _SEED,
    BaselineConfig,
    FeatureMaskConfig,
    PositiveFloat,
)
from mlflow_xai.strict import NonNegativeFloat, PositiveInt, _Strict


class FeatureAblationConfig(_Strict):
    feature_mask: FeatureMaskConfig = FeatureMaskConfig()
    baseline: BaselineConfig = BaselineConfig()
    perturbations_per_eval: PositiveInt = Field(default=64, description=_PER_EVAL)


class ShapleyValueSamplingConfig(_Strict):
    feature_mask: FeatureMaskConfig = FeatureMaskConfig()
    baseline: BaselineConfig = BaselineConfig()
    n_samples: PositiveInt = Field(default=25, description="random feature permutations per input")
    perturbations_per_eval: PositiveInt = Field(default=64, description=_PER_EVAL)
    seed: int = Field(default=0, description=_SEED)


class KernelShapConfig(_Strict):
    feature_mask: FeatureMaskConfig = FeatureMaskConfig()
    baseline: BaselineConfig = BaselineConfig()
    n_samples: PositiveInt = Field(default=64, description="coalitions sampled per input")
    perturbations_per_eval: PositiveInt = Field(default=64, description=_PER_EVAL)
    seed: int = Field(default=0, description=_SEED)


class LimeConfig(_Strict):
    feature_mask: FeatureMaskConfig = FeatureMaskConfig()
    baseline: BaselineConfig = BaselineConfig()
    n_samples: PositiveInt = Field(default=64, description="perturbed samples per input")
    perturbations_per_eval: PositiveInt = Field(default=64, description=_PER_EVAL)
    interpretable_model: Literal["lasso", "ridge", "linear_regression"] = Field(
        default="lasso", description="the surrogate fitted to the perturbations (scikit-learn)"
    )
    alpha: NonNegativeFloat = Field(default=0.01, description="regularisation of a lasso or ridge surrogate")
    distance_mode: Literal["cosine", "euclidean"] = Field(
        default="cosine", description="distance in the similarity kernel exp(-d^2 / width^2)"
    )
    kernel_width: PositiveFloat = Field(default=1.0, description="width of the similarity kernel")
    seed: int = Field(default=0, description=_SEED)

    @model_validator(mode="after")
    def _alpha_needs_regulariser(self) -> LimeConfig:
        if self.interpretable_model == "linear_regression" and "alpha" in self.model_fields_set:
            raise ValueError("alpha does not apply to interpretable_model 'linear_regression'")
        return self
