"""Integrated Gradients with our own quadrature (exact on linear models for every rule).

A fixed ``n_steps`` integrates with the configured rule; ``n_steps: auto`` refines each sample's
trapezoid partition of the path until its accuracy is shown (see ``mlflow_xai.adaptive``).
"""

from __future__ import annotations

import torch

from mlflow_xai.attribution.adaptive import ExplainedOutput, adaptive_integrated_gradients
from mlflow_xai.attribution.baselines import make_baseline
from mlflow_xai.attribution.methods.base import (
    Attribution,
    AttributionContext,
    AttributionMethod,
    register,
    text_baseline,
)
from mlflow_xai.attribution.quadrature import nodes_and_weights
from mlflow_xai.checks.convergence import spearman_rank_correlation, step_change_rel_l2
from mlflow_xai.model.handle import ModelHandle

__all__ = [
    "ExplainedOutput",
    "IntegratedGradients",
    "LayerIntegratedGradients",
    "integrated_gradients",
    "path_gradient_sum",
]


def integrated_gradients(
    f: ExplainedOutput,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    *,
    n_steps: int,
    rule: str = "gauss_legendre",
    internal_batch_size: int = 512,
) -> torch.Tensor:
    """IG_i(x) = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x'))/dx_i da, by the chosen rule.

    The points along the path are in ``x``'s dtype; the weighted sum of their gradients and the
    product with ``x - x'`` are accumulated in float32 at least (``accumulation_dtype``), so a
    bfloat16 model's error does not grow with the number of steps. The result has that dtype.
    """
    nodes, weights = nodes_and_weights(rule, n_steps)
    accumulate = accumulation_dtype(x.dtype)
    nodes_t = torch.as_tensor(nodes, dtype=x.dtype, device=x.device)
    weights_t = torch.as_tensor(weights, dtype=accumulate, device=x.device)
    baseline = baseline.expand_as(x)
    grads = path_gradient_sum(f, x, baseline, target, nodes_t, weights_t, internal_batch_size)
    return (x.to(accumulate) - baseline.to(accumulate)) * grads


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs, the input's own dtype for float32 and float64."""
    return torch.promote_types(dtype, torch.float32)


def path_gradient_sum(
    f: ExplainedOutput,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    nodes: torch.Tensor,
    weights: torch.Tensor,
    internal_batch_size: int,
) -> torch.Tensor:
    """sum_k w_k * dF/dx at x' + a_k (x - x'), per sample: shape of ``x``, in ``weights``' dtype.

    When a pass holds whole nodes (every sample at the same alphas), the points are a broadcast
    ``x' + a (x - x')`` and the weighted sum over nodes one contraction: no per-point gathers or
    index_add, which cost ~15% of the passes themselves on a small CNN on the CPU
    (benchmarks/ig_floor.py). Otherwise the (node, sample) pairs are flattened and evaluated
    ``internal_batch_size`` at a time, so a pass is as full as the budget allows.
    """
    batch, sample_shape = x.shape[0], x.shape[1:]
    ones = (1,) * len(sample_shape)
    delta = x - baseline
    grad_sum = torch.zeros_like(x, dtype=weights.dtype)
    if batch <= internal_batch_size:
        per_pass = internal_batch_size // batch
        for k0 in range(0, nodes.numel(), per_pass):
            alphas = nodes[k0 : k0 + per_pass]
            kk = alphas.numel()
            points = baseline.unsqueeze(0) + alphas.view(kk, 1, *ones) * delta.unsqueeze(0)
            points = points.reshape(kk * batch, *sample_shape).requires_grad_(True)
            (grads,) = torch.autograd.grad(f(points, target.repeat(kk)).sum(), points)
            # reshape, not view: autograd may return an expanded gradient (e.g. of x.sum(1))
            grads = grads.reshape(kk, batch, *sample_shape).to(weights.dtype)
            grad_sum += torch.tensordot(weights[k0 : k0 + kk], grads, dims=1)
        return grad_sum
    total = nodes.numel() * batch
    for start in range(0, total, internal_batch_size):
        pair = torch.arange(start, min(start + internal_batch_size, total), device=x.device)
        k, b = pair // batch, pair % batch
        alpha = nodes[k].view(-1, *ones)
        points = (baseline[b] + alpha * delta[b]).requires_grad_(True)
        (grads,) = torch.autograd.grad(f(points, target[b]).sum(), points)
        grad_sum.index_add_(0, b, grads.to(weights.dtype) * weights[k].view(-1, *ones))
    return grad_sum


@register("integrated_gradients")
class IntegratedGradients(AttributionMethod):
    """Per-sample extras: ``steps`` always; with ``n_steps: auto`` (or ``check_step_change``) also
    ``step_change_rel_l2`` and ``step_change_spearman`` (n vs 2n); with auto also ``converged``."""

    needs_gradients = True
    has_completeness = True

    def per_sample_quantities(self) -> dict[str, type]:
        quantities: dict[str, type] = {"steps": float}
        if self.config.n_steps == "auto" or self.config.check_step_change:
            quantities.update(step_change_rel_l2=float, step_change_spearman=float)
        if self.config.n_steps == "auto":
            quantities["converged"] = bool
        return quantities

    def _attribute(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, context: AttributionContext
    ) -> Attribution:
        cfg = self.config
        baseline = make_baseline(cfg.baseline, x, probe_mean=context.probe_mean, positions=context.positions)
        return self._along_path(handle, x, baseline, target, context)

    def _along_path(
        self,
        handle: ModelHandle,
        x: torch.Tensor,
        baseline: torch.Tensor,
        target: torch.Tensor,
        context: AttributionContext,
    ) -> Attribution:
        """IG of ``x`` from ``baseline``, fixed or adaptive as configured."""
        cfg = self.config
        if cfg.n_steps == "auto":
            return self._adaptive(handle, x, baseline, target, context.degenerate_floor)
        values = self._fixed(handle, x, baseline, target, cfg.n_steps)
        batch = x.shape[0]
        steps = torch.full((batch,), cfg.n_steps, dtype=torch.int64, device=x.device)
        extras = {"steps": steps}
        if cfg.check_step_change:
            doubled = self._fixed(handle, x, baseline, target, 2 * cfg.n_steps)
            extras["steps"] = steps * 3
            extras["step_change_rel_l2"] = step_change_rel_l2(values, doubled)
            extras["step_change_spearman"] = spearman_rank_correlation(values, doubled)
        with torch.no_grad():
            at_input = handle.explained(x, target)
            at_baseline = handle.explained(baseline, target)
        return Attribution(values.detach(), at_input, at_baseline, extras)

    def _fixed(
        self, handle: ModelHandle, x: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor, n: int
    ) -> torch.Tensor:
        cfg = self.config
        return integrated_gradients(
            handle.explained,
            x,
            baseline,
            target,
            n_steps=n,
            rule=cfg.rule,
            internal_batch_size=cfg.points_per_pass(x[0].numel()),
        ).detach()

    def _adaptive(
        self,
        handle: ModelHandle,
        x: torch.Tensor,
        baseline: torch.Tensor,
        target: torch.Tensor,
        degenerate_floor: float,
    ) -> Attribution:
        cfg = self.config
        result = adaptive_integrated_gradients(
            handle.explained,
            x,
            baseline,
            target,
            completeness_tolerance=cfg.completeness_tolerance,
            step_change_tolerance=cfg.step_change_tolerance,
            min_steps=cfg.min_steps,
            max_steps=cfg.max_steps,
            internal_batch_size=cfg.points_per_pass(x[0].numel()),
            degenerate_floor=degenerate_floor,
        )
        extras = {
            "steps": result.steps,
            "step_change_rel_l2": result.step_change_rel_l2,
            "step_change_spearman": result.step_change_spearman,
            "converged": result.converged,
        }
        return Attribution(
            result.attributions.detach(), result.output_at_input, result.output_at_baseline, extras
        )


@register("layer_integrated_gradients")
class LayerIntegratedGradients(IntegratedGradients):
    """IG of a text probe at the token embedding layer (``mlflow_xai.model.text``): the engine hands
    over each sample's embeddings and its baseline's (``AttributionContext.text_baseline``); the
    attributions are summed over the hidden features into one score per token, (B, L)."""

    for_text = True

    def _attribute(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, context: AttributionContext
    ) -> Attribution:
        baseline = text_baseline(context, self.name, "integrated_gradients")
        result = self._along_path(handle, x, baseline, target, context)
        result.values = result.values.sum(dim=-1)  # the extra row feature's share is exactly 0
        return result
