"""Parameters of Saliency, Input x Gradient and GradientShap.
"""

from __future__ import annotations

from pydantic import (
    Field,
)

from mlflow_xai.attribution.parameters.common import _SEED, BaselineConfig
from mlflow_xai.strict import NonNegativeFloat, PositiveInt, _Strict


class SaliencyConfig(_Strict):
    abs: bool = Field(default=True, description="return |gradient| (Captum's default) or the signed one")


class InputXGradientConfig(_Strict):
    """Input times gradient; it takes no parameters."""


class GradientShapConfig(_Strict):
    """Expected gradients: gradient at a random point between a noisy input and a random baseline.

    Completeness (sum of attributions = F(x) - E[F(x')]) holds only in expectation over the random
    draws, so its error shrinks like 1/sqrt(n_samples) and is never exactly zero.
    """

    n_samples: PositiveInt = Field(default=16, description="random points per input")
    stdevs: NonNegativeFloat = Field(default=0.0, description="std of the Gaussian noise added to inputs")
    multiply_by_inputs: bool = Field(
        default=True, description="global attribution (x - x') * grad; false gives local gradients"
    )
    baseline: BaselineConfig = BaselineConfig()
    n_baselines: PositiveInt = Field(
        default=8, description="baselines drawn for the distribution (random baseline kinds only)"
    )
    seed: int = Field(default=0, description=_SEED)
