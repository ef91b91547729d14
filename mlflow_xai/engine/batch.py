"""The per-batch step of an audit: one model, its methods, one probe batch in, plain arrays out."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from mlflow_xai.attribution.baselines import make_baseline
from mlflow_xai.attribution.methods.base import Attribution, AttributionContext, build, concat_attributions
from mlflow_xai.attribution.robustness import infidelity_per_sample, sensitivity_per_sample
from mlflow_xai.checks.eraser import comprehensiveness_sufficiency
from mlflow_xai.checks.faithfulness import deletion_insertion
from mlflow_xai.checks.randomisation import RandomisationScores, RandomisedCascade, cascade_labels
from mlflow_xai.config.audit_config import AuditConfig
from mlflow_xai.config.targets import TopTargets, target_entries
from mlflow_xai.engine.preflight import _check_checks, _check_fits, _check_targets
from mlflow_xai.engine.progress import AuditProgress
from mlflow_xai.engine.text import check_text_fits, check_text_methods, text_inputs
from mlflow_xai.errors import ModelError, ProbeError
from mlflow_xai.model.handle import (
    ModelHandle,
    audit_mode,
    is_exported_graph,
    resolve_autocast,
    resolve_device,
    tf32_mode,
)
from mlflow_xai.probe.probe_set import ProbeSet
from mlflow_xai.report.metric_names import result_keys


@dataclass
class MethodBatch:
    """One method's results on one batch, as plain arrays (what a worker sends back)."""

    values: np.ndarray  # (B, *input_shape) in the mask dtype
    seconds: float
    attribution_sum: np.ndarray | None = None  # (B,) float64, before rounding to the mask dtype
    output_at_input: np.ndarray | None = None
    output_at_baseline: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    checks_seconds: dict[str, float] = field(default_factory=dict)  # by check, e.g. deletion_insertion


@dataclass
class BatchResult:
    """Everything an audit keeps of one probe batch; the unit of caching and of distribution."""

    start: int
    ids: np.ndarray
    predictions: np.ndarray
    targets: np.ndarray  # (B, targets): the class each sample was explained for, per target slot
    methods: dict[str, MethodBatch]  # by result key (``BatchAttributor.result_keys``)

    def columns(self, *, per_sample: bool = False) -> dict[str, np.ndarray]:
        """The result as named arrays (``<key>|values``, ``<key>|seconds``, ``<key>|extra|<name>``, ...).

        ``per_sample`` makes every array one row per sample, as Ray Data's columns must be: the
        start repeated, a method's seconds on the batch's first row and zeros below."""
        n = len(self.ids)
        columns: dict[str, np.ndarray] = {
            "start": np.full(n, self.start, dtype=np.int64) if per_sample else np.array(self.start),
            "ids": self.ids.astype(str),
            "predictions": self.predictions,
            "targets": self.targets,
        }
        for name, m in self.methods.items():
            columns[f"{name}|values"] = m.values
            columns[f"{name}|seconds"] = _first_row(m.seconds, n) if per_sample else np.array(m.seconds)
            for key in ("attribution_sum", "output_at_input", "output_at_baseline"):
                if getattr(m, key) is not None:
                    columns[f"{name}|{key}"] = getattr(m, key)
            for key, value in m.extras.items():
                columns[f"{name}|extra|{key}"] = value
            for check, check_seconds in m.checks_seconds.items():
                columns[f"{name}|check_seconds|{check}"] = (
                    _first_row(check_seconds, n) if per_sample else (np.array(check_seconds))
                )
        return columns

    @classmethod
    def from_columns(cls, columns: Mapping[str, np.ndarray]) -> BatchResult:
        """The inverse of ``columns``, either layout."""
        methods: dict[str, MethodBatch] = {}
        for key, value in columns.items():
            if "|" not in key:
                continue
            name, _, rest = key.partition("|")
            m = methods.setdefault(name, MethodBatch(values=np.empty(0), seconds=0.0))
            if rest == "values":
                m.values = value
            elif rest == "seconds":
                m.seconds = float(np.sum(value))
            elif rest.startswith("extra|"):
                m.extras[rest.removeprefix("extra|")] = value
            elif rest.startswith("check_seconds|"):
                m.checks_seconds[rest.removeprefix("check_seconds|")] = float(np.sum(value))
            else:
                setattr(m, rest, value)
        start = int(np.asarray(columns["start"]).flat[0])
        return cls(start, columns["ids"], columns["predictions"], columns["targets"], methods)

    def save(self, path: Path) -> None:
        """Write to ``path`` atomically (a temporary name, then a rename)."""
        # A name of this writer's own: two audits of the same model, config and probe set may share
        # a cache folder and write the same batch at once.
        tmp = path.with_name(f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}")
        np.savez(tmp, **self.columns())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> BatchResult:
        with np.load(path, allow_pickle=False) as data:
            return cls.from_columns({key: data[key] for key in data.files})


def _first_row(value: float, n: int) -> np.ndarray:
    """``value`` as a per-sample column: on the first row, zeros below (the column sums to it)."""
    column = np.zeros(n)
    column[0] = value
    return column


class BatchAttributor:
    """The pure per-batch step of an audit: one model, its methods, one batch in, arrays out.

    The local engine and distributed workers (``engine: ray``) call the same ``run``. Use it inside
    ``session()``, which puts the model in audit mode on its device and restores it after.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: AuditConfig,
        *,
        probe_mean: np.ndarray | None = None,
        attention_mask: np.ndarray | None = None,
        token_ids: Mapping[str, Any] | None = None,
        token_type_ids: np.ndarray | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ModelError(f"the model to audit must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.methods = {name: build(name, mcfg) for name, mcfg in cfg.methods.enabled().items()}
        self.slots = cfg.target_slots()
        self.result_keys = result_keys(list(self.methods), self.slots)
        # Each method's result keys, in target order (what attribute_targets returns).
        self.slot_of = {key: slot for key, (_, slot) in self.result_keys.items()}
        self.keys_of = {
            name: [key for key, (owner, _) in self.result_keys.items() if owner == name]
            for name in self.methods
        }
        # audit_mode puts a module model in eval mode for the audit; the report says it did.
        self.model_was_training = not is_exported_graph(model) and any(m.training for m in model.modules())
        self.handle = ModelHandle(
            model,
            self.device,
            cfg.output,
            resolve_autocast(cfg.precision.autocast, self.device),
            output_key=cfg.output_key,
            output_index=cfg.output_index,
        )
        # A text probe (its attention mask given): token ids explained through the embedding layer.
        self.text = None
        if attention_mask is not None:
            self.text = text_inputs(model, cfg, attention_mask, token_ids, token_type_ids)
        check_text_methods(self.methods, text=self.text is not None)
        for method in self.methods.values():
            if self.text is None:
                method.check_model(self.handle)  # hooks on an exported graph, layer names, ReLU modules
        self.splitters = {name: _BatchSplitter(name) for name in self.methods}
        self.mask_dtype = np.dtype(cfg.artifacts.mask_dtype)
        self.dtype = _input_dtype(model)
        self.probe_mean_input = probe_mean  # as given (float64), for executors that rebuild attributors
        mean = None if probe_mean is None else torch.from_numpy(probe_mean)
        self.probe_mean = None if mean is None else mean.to(self.device, self.dtype)
        self._cascade: RandomisedCascade | None = None  # built on first use, inside session()

    @contextmanager
    def session(self) -> Iterator[BatchAttributor]:
        with audit_mode(self.model), _on_device(self.model, self.device), tf32_mode(self.cfg.precision.tf32):
            yield self

    def preflight(self, probe: ProbeSet) -> None:
        """Check on the first probe sample what would otherwise fail inside a batch: the input
        shape, the model's output, the target classes and each method's needs (gradients, layers,
        window sizes). Call inside ``session()``, before any batch."""
        if self.text is not None:
            classes = check_text_fits(self, probe)
            _check_targets(self.cfg, probe, classes)
            _check_checks(self.cfg, probe)
            return
        classes = _check_fits(self.handle, probe, self.dtype)
        _check_targets(self.cfg, probe, classes)
        _check_checks(self.cfg, probe)
        if self.cfg.checks.randomisation is not None:
            self.cascade()  # copying the model can fail: before any batch
        x = torch.from_numpy(np.array(probe.inputs[:1])).to(self.device, self.dtype)
        for method in self.methods.values():
            method.check_input(self.handle, x)

    def run(
        self,
        start: int,
        inputs: np.ndarray,
        labels: np.ndarray | None,
        ids: np.ndarray,
        progress: AuditProgress | None = None,
    ) -> BatchResult:
        # Random methods and baselines draw per sample from (seed, position in the probe set), so a
        # sample's result depends neither on its batch nor on the worker that ran it.
        context = AttributionContext(
            torch.arange(start, start + len(inputs)),
            probe_mean=self.probe_mean,
            degenerate_floor=self.cfg.checks.completeness.degenerate_floor,
        )
        handle: Any = self.handle
        if self.text is None:
            x = torch.from_numpy(np.ascontiguousarray(inputs)).to(device=self.device, dtype=self.dtype)
        else:
            handle, x = self.text.batch(self.handle, inputs, start)
        with torch.no_grad():
            scores = handle.scores(x)
        predicted = scores.argmax(dim=1)
        targets = resolve_targets(self.cfg.target, scores, labels)
        out: dict[str, MethodBatch] = {}
        for name, method in self.methods.items():
            if progress is not None:
                progress.working_on(name)
            started = time.perf_counter()
            if self.text is not None:
                baseline = self.text.baseline(handle, method.config.baseline)
                context = dataclasses.replace(context, text_baseline=baseline)
            results = self.splitters[name].attribute(method, handle, x, targets, context)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            # Targets that shared their passes (occlusion) share the time equally.
            seconds = (time.perf_counter() - started) / len(results)
            for key, result in zip(self.keys_of[name], results, strict=True):
                batch = MethodBatch(
                    values=result.values.detach().float().cpu().numpy().astype(self.mask_dtype),
                    seconds=seconds,
                    extras={k: v.detach().cpu().numpy() for k, v in result.extras.items()},
                )
                target = targets[:, self.slot_of[key]]
                if self.cfg.checks.eraser is not None:
                    self._eraser(batch, handle, x, result, target, context)
                if self.cfg.checks.deletion_insertion is not None:
                    self._deletion_insertion(batch, x, result, target, context)
                self._robustness(batch, method, x, result, target, context)
                if method.has_completeness:
                    flat = result.values.detach().reshape(len(x), -1)
                    batch.attribution_sum = flat.double().sum(dim=1).cpu().numpy()
                    batch.output_at_input = result.output_at_input.double().cpu().numpy()
                    batch.output_at_baseline = result.output_at_baseline.double().cpu().numpy()
                out[key] = batch
            if self.cfg.checks.randomisation is not None:
                keyed = [out[key] for key in self.keys_of[name]]
                self._randomisation(name, method, x, targets, context, results, keyed)
            if progress is not None:
                progress.advance(name, len(x))
        return BatchResult(start, np.asarray(ids), predicted.cpu().numpy(), targets.cpu().numpy(), out)

    def randomisation_layers(self) -> list[str]:
        """The lowest layer randomised at each stage of the randomisation check; [] without it."""
        check = self.cfg.checks.randomisation
        return [] if check is None else cascade_labels(self.model, check.max_stages)

    def cascade(self) -> RandomisedCascade:
        """The model copy the randomisation check randomises (made once, on the audit's device)."""
        if self._cascade is None:
            check = self.cfg.checks.randomisation
            try:
                self._cascade = RandomisedCascade(self.model, max_stages=check.max_stages, seed=check.seed)
            except ValueError as exc:  # no parameters
                raise ModelError(f"checks.randomisation cannot run: {exc}") from exc
            except Exception as exc:
                raise ModelError(
                    f"checks.randomisation needs a copy of the model to randomise, and copying it "
                    f"failed ({type(exc).__name__}: {exc}); leave the check out for this model"
                ) from exc
        return self._cascade

    def cascade_maps(self, inputs: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
        """Each result's maps of ``inputs`` (the first probe samples) after every cascade stage, for
        the report's row of maps: ``{result key: (stages, n, *input_shape)}`` float32. Call inside
        ``session()``."""
        x = torch.from_numpy(np.ascontiguousarray(inputs)).to(device=self.device, dtype=self.dtype)
        target = torch.from_numpy(np.asarray(targets)).to(device=self.device, dtype=torch.int64)
        context = AttributionContext(
            torch.arange(len(x)),
            probe_mean=self.probe_mean,
            degenerate_floor=self.cfg.checks.completeness.degenerate_floor,
        )
        cascade = self.cascade()
        handle = dataclasses.replace(self.handle, module=cascade.copy)
        stages: dict[str, list[np.ndarray]] = {}
        for _ in cascade.cascade():
            for name, method in self.methods.items():
                results = self.splitters[name].attribute(method, handle, x, target, context)
                for key, result in zip(self.keys_of[name], results, strict=True):
                    stages.setdefault(key, []).append(result.values.detach().float().cpu().numpy())
        return {key: np.stack(maps) for key, maps in stages.items()}

    def _randomisation(
        self,
        name: str,
        method: Any,
        x: torch.Tensor,
        targets: torch.Tensor,
        context: AttributionContext,
        results: list[Attribution],
        batches: list[MethodBatch],
    ) -> None:
        """Add the model randomisation check of every target's ``results`` to its ``batches``."""
        check = self.cfg.checks.randomisation
        started = time.perf_counter()
        cascade = self.cascade()
        handle = dataclasses.replace(self.handle, module=cascade.copy)
        options = {
            "similarity": check.similarity,
            "top_k": check.top_k,
            "depth": check.depth,
            "max_similarity": check.max_similarity,
        }
        scores = [RandomisationScores(result.values, **options) for result in results]
        for _ in cascade.cascade():
            randomised = self.splitters[name].attribute(method, handle, x, targets, context)
            for score, result in zip(scores, randomised, strict=True):
                score.add(result.values)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = (time.perf_counter() - started) / len(batches)
        for batch, score in zip(batches, scores, strict=True):
            batch.extras.update({key: value.cpu().numpy() for key, value in score.result().items()})
            batch.checks_seconds["randomisation"] = seconds

    def _eraser(
        self,
        batch: MethodBatch,
        handle: Any,
        x: torch.Tensor,
        result: Attribution,
        target: torch.Tensor,
        context: AttributionContext,
    ) -> None:
        """Add comprehensiveness and sufficiency of ``result``'s token ranking to ``batch``."""
        check = self.cfg.checks.eraser
        started = time.perf_counter()
        if check.removal == "replace":
            removed = self.text.baseline(handle, check.baseline)

            def kept_output(keep: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
                points = torch.where(keep.unsqueeze(-1), x[rows], removed[rows])
                return handle.explained(points, target[rows])

        else:
            pad = self.text.substitutes["pad"]

            def kept_output(keep: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
                mask = (keep & (handle.attention_mask[rows] == 1)).long()
                order = torch.sort(1 - mask, dim=1, stable=True).indices  # kept tokens first, in order
                ids = torch.gather(handle.ids[rows], 1, order)
                types = (
                    None
                    if handle.token_type_ids is None
                    else torch.gather(handle.token_type_ids[rows], 1, order)
                )
                mask = torch.gather(mask, 1, order)
                ids = torch.where(mask == 1, ids, pad)
                scores = handle.scores_of_ids(ids, mask, types)
                return scores.gather(1, target[rows].view(-1, 1)).squeeze(1)

        found = comprehensiveness_sufficiency(
            kept_output,
            result.values.detach(),
            ~self.text.kept(handle),
            context.positions.tolist(),
            bins=check.bins,
            random_draws=check.random_draws,
            seed=check.seed,
            batch=check.internal_batch_size,
        )
        batch.extras.update({key: value.cpu().numpy() for key, value in found.items()})
        batch.checks_seconds["eraser"] = time.perf_counter() - started

    def _robustness(
        self,
        batch: MethodBatch,
        method: Any,
        x: torch.Tensor,
        result: Attribution,
        target: torch.Tensor,
        context: AttributionContext,
    ) -> None:
        """Add infidelity and max-sensitivity of ``result`` to ``batch``, where configured."""
        checks, positions = self.cfg.checks, context.positions.tolist()
        if checks.infidelity is not None:
            started = time.perf_counter()
            values = infidelity_per_sample(
                self.handle.explained,
                x,
                result.values.detach(),
                target,
                positions,
                noise_scale=checks.infidelity.noise_scale,
                n_perturb_samples=checks.infidelity.n_perturb_samples,
                seed=checks.infidelity.seed,
            )
            batch.extras["infidelity"] = values.cpu().numpy()
            batch.checks_seconds["infidelity"] = time.perf_counter() - started
        if checks.sensitivity is not None:
            started = time.perf_counter()

            def explain(points: torch.Tensor, point_target: torch.Tensor, position: int) -> torch.Tensor:
                at = dataclasses.replace(context, positions=torch.full((len(points),), position))
                return method.attribute(self.handle, points, point_target, at).values.detach()

            values = sensitivity_per_sample(
                explain,
                x,
                target,
                positions,
                radius=checks.sensitivity.radius,
                n_perturb_samples=checks.sensitivity.n_perturb_samples,
                seed=checks.sensitivity.seed,
            )
            batch.extras["sensitivity_max"] = values.cpu().numpy()
            batch.checks_seconds["sensitivity"] = time.perf_counter() - started

    def _deletion_insertion(
        self,
        batch: MethodBatch,
        x: torch.Tensor,
        result: Attribution,
        target: torch.Tensor,
        context: AttributionContext,
    ) -> None:
        """Add the deletion and insertion check of ``result``'s ranking to ``batch``."""
        check = self.cfg.checks.deletion_insertion
        started = time.perf_counter()
        baseline = make_baseline(check.baseline, x, probe_mean=self.probe_mean, positions=context.positions)
        found = deletion_insertion(
            self.handle.explained,
            x,
            baseline,
            target,
            result.values.detach(),
            context.positions.tolist(),
            steps=check.steps,
            features=check.features,
            patch_size=check.patch_size,
            random_draws=check.random_draws,
            seed=check.seed,
            batch=check.internal_batch_size,
            degenerate_floor=self.cfg.checks.completeness.degenerate_floor,
            removal=check.removal,
            noise=check.noise,
        )
        batch.extras.update({key: value.cpu().numpy() for key, value in found.items()})
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        batch.checks_seconds["deletion_insertion"] = time.perf_counter() - started


class _BatchSplitter:
    """Runs one method on a batch; on CUDA out-of-memory it halves the pieces and retries.

    The smaller size sticks for the rest of the audit, so the next batches do not fail first.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.limit: int | None = None  # largest piece known to fit; None until memory runs out
        self.splits = 0

    def attribute(
        self,
        method: Any,
        handle: ModelHandle,
        x: torch.Tensor,
        targets: torch.Tensor,
        context: AttributionContext,
    ) -> list[Attribution]:
        """One Attribution per column of ``targets`` (B, K)."""
        pieces: list[list[Attribution]] = []
        start, n = 0, len(x)
        while start < n:
            size = n - start if self.limit is None else min(self.limit, n - start)
            rows = slice(start, start + size)
            try:
                piece = method.attribute_targets(
                    handle, x[rows], targets[rows], context.rows(start, start + size)
                )
                pieces.append(piece)
            except torch.cuda.OutOfMemoryError as exc:
                if size == 1:
                    raise ModelError(
                        f"method {self.name!r} ran out of device memory on a single sample; lower its "
                        "internal_batch_size (or perturbations_per_eval), or audit on the CPU"
                    ) from exc
                del exc  # its traceback holds the failed pass's tensors
                if handle.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.limit = (size + 1) // 2
                self.splits += 1
                continue
            start += size
        return [concat_attributions([piece[k] for piece in pieces]) for k in range(targets.shape[1])]


@contextmanager
def _on_device(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Move the model to ``device`` for the audit and back to where it was after."""
    params = list(model.parameters())
    original = params[0].device if params else device
    if original != device:
        model.to(device)
    try:
        yield
    finally:
        if original != device:
            model.to(original)


def _input_dtype(model: nn.Module) -> torch.dtype:
    """Inputs follow the model's floating-point parameters (float64 models get float64 paths)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def resolve_targets(
    spec: Any,
    scores: torch.Tensor,
    labels: np.ndarray | None,
) -> torch.Tensor:
    """The class each sample is explained for, per target slot: (B, K) int64 on the scores' device.

    ``top: k`` takes the k highest scores in order (ties by the lower class index, as ``argmax``
    takes the first), so ``top1`` is the predicted class."""
    num_classes, device = scores.shape[1], scores.device
    if isinstance(spec, TopTargets):
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        return order[:, : spec.top]
    columns = []
    for entry in target_entries(spec):
        if entry == "predicted":
            columns.append(scores.argmax(dim=1))
        elif entry == "label":
            columns.append(torch.from_numpy(np.asarray(labels)).to(device=device, dtype=torch.int64))
        else:
            columns.append(torch.full((len(scores),), int(entry), dtype=torch.int64, device=device))
    target = torch.stack(columns, dim=1)
    if int(target.min()) < 0 or int(target.max()) >= num_classes:
        bad = int(target.max()) if int(target.max()) >= num_classes else int(target.min())
        raise ProbeError(
            f"target class {bad} is out of range: the model has {num_classes} classes, so a target "
            f"must be 0 to {num_classes - 1}"
        )
    return target
