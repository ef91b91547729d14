"""Parameters of DeepLift and DeepLiftShap.
"""

from __future__ import annotations

from pydantic import (
    Field,
)

from mlflow_xai.attribution.parameters.common import BaselineConfig, PositiveFloat
from mlflow_xai.strict import PositiveInt, _Strict


class DeepLiftConfig(_Strict):
    """DeepLift's rescale rule; summation to delta is exact on ReLU networks without max-pooling."""

    multiply_by_inputs: bool = Field(
        default=True, description="global attribution (x - x') * multipliers; false gives multipliers"
    )
    eps: PositiveFloat = Field(default=1e-10, description="below this |x - x'| a non-linearity is linear")
    baseline: BaselineConfig = BaselineConfig()


class DeepLiftShapConfig(_Strict):
    """DeepLift averaged over a baseline distribution; F(x') is then the mean over the baselines."""

    multiply_by_inputs: bool = Field(
        default=True, description="global attribution (x - x') * multipliers; false gives multipliers"
    )
    baseline: BaselineConfig = BaselineConfig(kind="uniform")
    n_baselines: PositiveInt = Field(
        default=8, description="baselines in the distribution (random baseline kinds only)"
    )
