"""Parameters of Integrated Gradients (``methods.integrated_gradients``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    Field,
    model_validator,
)

from mlflow_xai.attribution.parameters.common import BaselineConfig
from mlflow_xai.attribution.quadrature import RULES
from mlflow_xai.strict import NonNegativeFloat, PositiveInt, _Strict

#: ``internal_batch_size: auto`` of IG: at most this many points a pass, and at most
#: IG_VALUES_PER_PASS input values (2^22, 16 MiB of float32 inputs) in them.
IG_POINTS_PER_PASS = 512
IG_VALUES_PER_PASS = 1 << 22


class IntegratedGradientsConfig(_Strict):
    """``n_steps: auto`` refines each sample's trapezoid partition of the path, where it is needed,
    until its completeness error and its step change (each interval against its halves) are both
    within tolerance; the tolerances and step bounds below apply only then. A fixed ``n_steps``
    uses ``rule``."""

    n_steps: PositiveInt | Literal["auto"] = Field(
        default=32, description="gradient evaluations along the path, or 'auto' (per sample)"
    )
    rule: Literal[RULES] = "gauss_legendre"  # type: ignore[valid-type]
    baseline: BaselineConfig = BaselineConfig()
    internal_batch_size: PositiveInt | Literal["auto"] = Field(
        default="auto",
        description="interpolated inputs per forward/backward pass; auto = 512, fewer for inputs of "
        "more than 8,192 values (2^22 input values a pass: 27 images at 3x224x224)",
    )
    completeness_tolerance: NonNegativeFloat = Field(
        default=0.01, description="auto: max |sum(attr) - (F(x) - F(x'))| / |F(x) - F(x')|"
    )
    step_change_tolerance: NonNegativeFloat = Field(
        default=0.02, description="auto: max ||a_fine - a_coarse|| / ||a_fine|| (intervals vs their halves)"
    )
    min_steps: PositiveInt = Field(
        default=33, description="auto: the first check uses at least this many evaluations"
    )
    max_steps: PositiveInt = Field(default=513, description="auto: at most this many evaluations per sample")
    check_step_change: bool = Field(
        default=False,
        description="fixed n_steps: also integrate with 2 n_steps and report the step change (3x cost)",
    )

    def points_per_pass(self, sample_values: int) -> int:
        """``internal_batch_size`` for inputs of ``sample_values`` values each, ``auto`` resolved.

        A pass holds every point's activations for the backward pass, and they grow with the
        input: on resnet18 at 3x224x224, 128 points a pass (4 images x 32 steps) peaked at 3.9 GB
        RSS, 27 points at 1.6 GB, in the same time on a CPU (benchmarks/real_models.py)."""
        if self.internal_batch_size != "auto":
            return self.internal_batch_size
        return max(1, min(IG_POINTS_PER_PASS, IG_VALUES_PER_PASS // max(1, sample_values)))

    @model_validator(mode="before")
    @classmethod
    def _auto_means_trapezoid(cls, data: Any) -> Any:
        # The adaptive partitions are integrated by trapezoid: say so in the validated config.
        if isinstance(data, Mapping) and data.get("n_steps") == "auto" and "rule" not in data:
            return {**data, "rule": "trapezoid"}
        return data

    @model_validator(mode="after")
    def _steps_fit_the_rule(self) -> IntegratedGradientsConfig:
        if self.n_steps == "auto":
            if self.rule != "trapezoid":
                raise ValueError(
                    f"rule {self.rule!r} does not apply with n_steps 'auto', which always uses "
                    "trapezoid partitions; drop rule or set a fixed n_steps"
                )
            from mlflow_xai.attribution.quadrature import nested_trapezoid_intervals

            nested_trapezoid_intervals(self.min_steps, self.max_steps)  # raises if they do not fit
        elif self.rule == "trapezoid" and self.n_steps < 2:
            raise ValueError("n_steps must be >= 2 with rule 'trapezoid' (it evaluates both ends)")
        return self
