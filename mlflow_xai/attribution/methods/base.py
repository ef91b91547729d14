"""The adapter interface every attribution method implements, and the registry that finds them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from mlflow_xai.attribution.baselines import make_baseline, make_baseline_distribution
from mlflow_xai.attribution.parameters import BaselineConfig
from mlflow_xai.errors import ModelError
from mlflow_xai.model.handle import HOOK_ADVICE, ModelHandle, check_gradient_path
from mlflow_xai.seeding import sample_seed


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


@dataclass(frozen=True)
class AttributionContext:
    """What a method is told about a batch beyond its inputs and targets.

    ``positions`` are the samples' indices in the probe set: every random draw for a sample is
    seeded by (seed, position) (``mlflow_xai.seeding``), so results do not depend on batching.
    ``probe_mean`` is the probe set's mean input (for ``baseline: probe_mean``), and
    ``degenerate_floor`` the completeness check's floor (adaptive IG stops by the same rule).
    """

    positions: torch.Tensor  # (B,) int64, on the CPU
    probe_mean: torch.Tensor | None = None
    degenerate_floor: float = 1e-6
    # Text probes: each sample's baseline in the embedding space (``mlflow_xai.model.text``).
    text_baseline: torch.Tensor | None = None

    @classmethod
    def first(cls, batch: int, **kwargs: Any) -> AttributionContext:
        """A context for a batch made of the probe set's first ``batch`` samples."""
        return cls(torch.arange(batch), **kwargs)

    def rows(self, start: int, stop: int) -> AttributionContext:
        """The context of the samples ``start:stop`` of this batch."""
        baseline = None if self.text_baseline is None else self.text_baseline[start:stop]
        return dataclasses.replace(self, positions=self.positions[start:stop], text_baseline=baseline)


class AttributionMethod:
    """Base class of the adapters. A subclass sets ``name`` and implements ``_attribute``."""

    name: ClassVar[str]
    needs_hooks: ClassVar[bool] = False  # module hooks do not fire on an exported graph
    needs_gradients: ClassVar[bool] = False  # differentiates the output with respect to the input
    baseline_distribution: ClassVar[bool] = False  # draws one baseline set for the whole batch
    has_completeness: ClassVar[bool] = False
    for_text: ClassVar[bool] = False  # explains token ids through the embedding layer (text probes)

    def __init__(self, config: Any) -> None:
        self.config = config

    def per_sample_quantities(self) -> dict[str, type]:
        """The per-sample extras this method reports as configured (``Attribution.extras``), each
        ``float`` (summarised as _mean/_p95/_max) or ``bool`` (summarised as _fraction). With
        ``has_completeness`` they declare every metric the method can produce, so that a gate
        naming any other metric is refused before any compute."""
        return {}

    def attribute(
        self,
        handle: ModelHandle,
        x: torch.Tensor,
        target: torch.Tensor,
        context: AttributionContext | None = None,
    ) -> Attribution:
        """Attributions of ``x`` for ``target``; ``context`` defaults to the probe set's first samples."""
        self.check_model(handle)
        context = AttributionContext.first(len(x)) if context is None else context
        if len(context.positions) != len(x):
            raise ValueError(f"the context has {len(context.positions)} positions for {len(x)} samples")
        return self._attribute(handle, x, target, context)

    def attribute_targets(
        self,
        handle: ModelHandle,
        x: torch.Tensor,
        targets: torch.Tensor,
        context: AttributionContext | None = None,
    ) -> list[Attribution]:
        """Attributions of ``x`` for each column of ``targets`` (B, K), one Attribution per column.

        Every target of a sample sees the same random draws (they are seeded by the sample's
        position), so targets differ only by what they explain. This runs the method once per
        column; a method whose passes serve every class at once (occlusion) overrides it."""
        return [self.attribute(handle, x, targets[:, k], context) for k in range(targets.shape[1])]

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

    def _attribute(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, context: AttributionContext
    ) -> Attribution:
        raise NotImplementedError


class BaselineDistributionMethod(AttributionMethod):
    """A gradient method that averages over a baseline distribution (GradientShap, DeepLiftShap).

    Each sample gets its own distribution (a ``uniform`` one is drawn from (seed, position)), and
    a method that draws random numbers itself (``random_draws``) runs one sample at a time with
    the generators seeded by (seed, position). F(x') is the mean output over the sample's
    baselines, and completeness is claimed only with ``multiply_by_inputs``.
    """

    needs_gradients = True
    baseline_distribution = True
    random_draws: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.has_completeness = config.multiply_by_inputs

    def explain(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, baselines: torch.Tensor
    ) -> torch.Tensor:
        """The method's attributions of ``x`` against the baseline set ``baselines`` (m, ...)."""
        raise NotImplementedError

    def _attribute(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, context: AttributionContext
    ) -> Attribution:
        cfg = self.config
        shared = cfg.baseline.kind != "uniform"  # one deterministic baseline set for every sample
        if shared and not self.random_draws:
            baselines = make_baseline_distribution(
                cfg.baseline, x, cfg.n_baselines, probe_mean=context.probe_mean
            )
            values = self.explain(handle, x, target, baselines)
            return self._with_outputs(handle, x, target, values, baselines)
        pieces = []
        for i, position in enumerate(context.positions.tolist()):
            xi, ti = x[i : i + 1], target[i : i + 1]
            baselines = make_baseline_distribution(
                cfg.baseline, xi, cfg.n_baselines, probe_mean=context.probe_mean, position=position
            )
            with seeded(sample_seed(getattr(cfg, "seed", 0), position, self.name), x.device):
                values = self.explain(handle, xi, ti, baselines)
            pieces.append(self._with_outputs(handle, xi, ti, values, baselines))
        return concat_attributions(pieces)

    @staticmethod
    def _with_outputs(
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


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the generators Captum draws from for one call, then restore the caller's state.

    That is torch's generator (and the CUDA one of ``device``) and NumPy's global generator, which
    GradientShap uses for its interpolation points and baseline draws.
    """
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            yield
    finally:
        np.random.set_state(numpy_state)


def per_sample_seeded(
    context: AttributionContext,
    seed: int,
    stream: str,
    device: torch.device,
    attribute_one: Callable[[int], torch.Tensor],
) -> torch.Tensor:
    """``attribute_one(i)`` for each sample ``i`` of the batch, alone, with the global generators
    seeded by (seed, the sample's position), concatenated: what a random method draws for a sample
    does not depend on the other samples of its batch."""
    pieces = []
    for i, position in enumerate(context.positions.tolist()):
        with seeded(sample_seed(seed, position, stream), device):
            pieces.append(attribute_one(i))
    return torch.cat(pieces)


def concat_attributions(pieces: list[Attribution]) -> Attribution:
    """The attributions of consecutive pieces of a batch, as one."""
    if len(pieces) == 1:
        return pieces[0]

    def cat(values: list[torch.Tensor | None]) -> torch.Tensor | None:
        return None if values[0] is None else torch.cat(values)  # type: ignore[arg-type]

    return Attribution(
        values=torch.cat([p.values for p in pieces]),
        output_at_input=cat([p.output_at_input for p in pieces]),
        output_at_baseline=cat([p.output_at_baseline for p in pieces]),
        extras={key: torch.cat([p.extras[key] for p in pieces]) for key in pieces[0].extras},
    )


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


def text_baseline(context: AttributionContext, method: str, instead: str) -> torch.Tensor:
    """The text baseline a method over tokens needs; refused with the method to use ``instead``
    when the probe is not a text probe."""
    if context.text_baseline is None:
        raise ModelError(
            f"method {method!r} explains text probes (token ids, through the embedding layer); for other "
            f"inputs use {instead}"
        )
    return context.text_baseline
