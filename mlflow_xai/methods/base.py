"""The adapter interface every attribution method implements, and the registry that finds them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from mlflow_xai.baselines import make_baseline, make_baseline_distribution
from mlflow_xai.config import BaselineConfig
from mlflow_xai.errors import ModelError
from mlflow_xai.model import HOOK_ADVICE, ModelHandle, check_gradient_path


@dataclass
class Attribution:
    """What a method returns for one batch.

    ``values`` has the input's shape. Methods that satisfy a completeness property also return, per
    sample, the explained output at the input and at the baseline, so that the check can compare
    ``sum(values)`` with ``F(x) - F(x')``.
    """

    values: torch.Tensor
    output_at_input: torch.Tensor | None = None
    output_at_baseline: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class AttributionMethod:
    """Base class of the adapters. A subclass sets ``name`` and implements ``_attribute``."""

    name: ClassVar[str]
    needs_hooks: ClassVar[bool] = False  # module hooks do not fire on an exported graph
    needs_gradients: ClassVar[bool] = False  # differentiates the output with respect to the input
    baseline_distribution: ClassVar[bool] = False  # draws one baseline set for the whole batch
    has_completeness: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        self.config = config

    def attribute(self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor) -> Attribution:
        self.check_model(handle)
        return self._attribute(handle, x, target)

    def check_model(self, handle: ModelHandle) -> None:
        """Refuse a model this method cannot explain as configured (no input needed, no compute)."""
        if self.needs_hooks and handle.exported:
            raise ModelError(
                f"method {self.name!r} needs module hooks, which never fire on an exported graph "
                f"(MLflow's default pt2 format); {HOOK_ADVICE}, or drop {self.name!r} from methods"
            )

    def check_input(self, handle: ModelHandle, x: torch.Tensor) -> None:
        """Refuse, before any batch is attributed, what would fail on ``x`` (one probe sample).

        A subclass that adds checks calls this first.
        """
        self.check_model(handle)
        self.check_baseline(x)
        if self.needs_gradients:
            check_gradient_path(handle, x, self.name)

    def check_baseline(self, x: torch.Tensor) -> None:
        """Build the configured baseline for ``x``: a file that cannot be read or does not fit the
        input fails here, not in the first batch. The probe mean is known only to the engine."""
        baseline = getattr(self.config, "baseline", None)
        if not isinstance(baseline, BaselineConfig) or baseline.kind == "probe_mean":
            return
        if self.baseline_distribution:
            make_baseline_distribution(baseline, x, 1)
        else:
            make_baseline(baseline, x)

    def _attribute(self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor) -> Attribution:
        raise NotImplementedError


class BaselineDistributionMethod(AttributionMethod):
    """A gradient method that draws one baseline set for the whole batch (GradientShap,
    DeepLiftShap). F(x') is the mean output over that set, and completeness is claimed only with
    ``multiply_by_inputs``."""

    needs_gradients = True
    baseline_distribution = True
    probe_mean: torch.Tensor | None = None  # set by the engine for `baseline: probe_mean`

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.has_completeness = config.multiply_by_inputs

    def baselines(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return make_baseline_distribution(cfg.baseline, x, cfg.n_baselines, probe_mean=self.probe_mean)

    @staticmethod
    def with_outputs(
        handle: ModelHandle,
        x: torch.Tensor,
        target: torch.Tensor,
        values: torch.Tensor,
        baselines: torch.Tensor,
    ) -> Attribution:
        with torch.no_grad():
            at_input = handle.explained(x, target)
            at_baseline = handle.scores(baselines)[:, target].mean(dim=0)
        return Attribution(values.detach(), at_input, at_baseline)


_REGISTRY: dict[str, type[AttributionMethod]] = {}


def register(name: str) -> Callable[[type[AttributionMethod]], type[AttributionMethod]]:
    """Class decorator adding a method under ``name``; a duplicate name is refused."""

    def decorate(cls: type[AttributionMethod]) -> type[AttributionMethod]:
        if name in _REGISTRY:
            raise ValueError(
                f"attribution method {name!r} is already registered by {_REGISTRY[name].__qualname__}"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def registered() -> dict[str, type[AttributionMethod]]:
    return dict(_REGISTRY)


def build(name: str, config: Any) -> AttributionMethod:
    if name not in _REGISTRY:
        raise ValueError(f"unknown attribution method {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](config)
