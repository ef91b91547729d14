"""Methods over tokens that are not Integrated Gradients: occlusion one token at a time,
KernelSHAP and LIME with each token as one feature, and GradientSHAP at the embedding layer.

They take what ``layer_integrated_gradients`` takes (``mlflow_xai.model.text``): each sample's
embeddings with its row as the last feature, and the baseline's in ``AttributionContext``.
"""

from __future__ import annotations

import torch

from mlflow_xai.attribution.methods.base import (
    Attribution,
    AttributionContext,
    AttributionMethod,
    register,
    text_baseline,
)
from mlflow_xai.attribution.methods.perturbation import KernelShap, Lime
from mlflow_xai.model.handle import ModelHandle
from mlflow_xai.seeding import sample_generator


def replaced_tokens(x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: the tokens the baseline replaces (it keeps special tokens and padding)."""
    return (x[..., :-1] != baseline[..., :-1]).any(dim=-1)


@register("token_occlusion")
class TokenOcclusion(AttributionMethod):
    """F(x) - F(x with token i set to the baseline), for every token the baseline replaces."""

    for_text = True

    def _attribute(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, context: AttributionContext
    ) -> Attribution:
        baseline = text_baseline(context, self.name, "occlusion")
        sample, position = torch.nonzero(replaced_tokens(x, baseline), as_tuple=True)
        values = torch.zeros(x.shape[:2], dtype=torch.float64, device=x.device)
        with torch.no_grad():
            at_input = handle.explained(x, target).double()
            for start in range(0, len(sample), self.config.internal_batch_size):
                rows = sample[start : start + self.config.internal_batch_size]
                cols = position[start : start + self.config.internal_batch_size]
                points = x[rows].clone()
                picked = torch.arange(len(rows), device=x.device)
                points[picked, cols] = baseline[rows, cols]
                values[rows, cols] = at_input[rows] - handle.explained(points, target[rows]).double()
        return Attribution(values)


def _token_groups(x: torch.Tensor, baseline: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Captum feature groups over the points (B, L, H + 1): each token the baseline replaces is one
    group (its row feature too), and every token it keeps is in one last group, which switching
    cannot change. Also the (B, L) tokens the baseline replaces."""
    replaced = replaced_tokens(x, baseline)
    positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
    groups = torch.where(replaced, positions, x.shape[1])
    # Numbered 0, 1, ... within each sample, as Captum expects of one sample's mask.
    groups = torch.stack([torch.unique(row, return_inverse=True)[1] for row in groups])
    return groups.unsqueeze(-1).expand_as(x).contiguous(), replaced


class _TokenPerturbation:
    """Mixin: run a group perturbation method with each replaceable token as one group; a token's
    score is its group's value (the same on each of its features), kept tokens score 0."""

    for_text = True

    def _attribute(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, context: AttributionContext
    ) -> Attribution:
        baseline = text_baseline(context, self.name, self.name.removeprefix("token_"))
        groups, replaced = _token_groups(x, baseline)
        values = self._explain(handle, x, baseline, target, groups, context)
        return Attribution(torch.where(replaced, values[..., 0], 0.0))


@register("token_kernel_shap")
class TokenKernelShap(_TokenPerturbation, KernelShap):
    """Shapley values of the tokens from a weighted linear fit to ``n_samples`` random coalitions."""


@register("token_lime")
class TokenLime(_TokenPerturbation, Lime):
    """A linear surrogate of the tokens fitted near the input, weighted by similarity."""


@register("layer_gradient_shap")
class LayerGradientShap(AttributionMethod):
    """Expected gradients at the embedding layer; see ``LayerGradientShapConfig``."""

    for_text = True
    needs_gradients = True

    def per_sample_quantities(self) -> dict[str, type]:
        return {}

    def _attribute(
        self, handle: ModelHandle, x: torch.Tensor, target: torch.Tensor, context: AttributionContext
    ) -> Attribution:
        baseline = text_baseline(context, self.name, "gradient_shap")
        cfg = self.config
        replaced = replaced_tokens(x, baseline).unsqueeze(-1).to(x.dtype)
        alphas, noises = [], []
        for position in context.positions.tolist():  # per sample: the same draws in any batch
            generator = sample_generator(cfg.seed, int(position), self.name)
            alphas.append(torch.rand(cfg.n_samples, generator=generator, dtype=torch.float64))
            noise = torch.randn(cfg.n_samples, *x.shape[1:], generator=generator, dtype=torch.float64)
            noises.append(noise * cfg.stdevs)
        alpha = torch.stack(alphas).to(x.device, x.dtype)  # (B, n)
        noise = torch.stack(noises).to(x.device, x.dtype) * replaced.unsqueeze(1)  # (B, n, L, H + 1)
        noise[..., -1] = 0.0  # the row feature never moves
        noisy = x.unsqueeze(1) + noise
        delta = noisy - baseline.unsqueeze(1)
        points = (baseline.unsqueeze(1) + alpha.view(*alpha.shape, 1, 1) * delta).flatten(0, 1)
        rows = torch.arange(len(x), device=x.device).repeat_interleave(cfg.n_samples)
        grads = torch.empty_like(points)
        for start in range(0, len(points), cfg.internal_batch_size):
            part = slice(start, start + cfg.internal_batch_size)
            chunk = points[part].detach().requires_grad_(True)
            with torch.enable_grad():
                (grads[part],) = torch.autograd.grad(handle.explained(chunk, target[rows[part]]).sum(), chunk)
        values = (delta * grads.view_as(delta)).mean(dim=1).sum(dim=-1)
        return Attribution(values.detach())
