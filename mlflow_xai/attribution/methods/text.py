"""Methods over tokens that are not Integrated Gradients: occlusion one token at a time, and
KernelSHAP and LIME with each token as one feature.

They take what ``layer_integrated_gradients`` takes (``mlflow_xai.model.text``): each sample's
embeddings with its row as the last feature, and the baseline's in ``AttributionContext``.
"""

from __future__ import annotations

import torch

from mlflow_xai.attribution.methods.base import Attribution, AttributionContext, AttributionMethod, register
from mlflow_xai.attribution.methods.perturbation import KernelShap, Lime
from mlflow_xai.errors import ModelError
from mlflow_xai.model.handle import ModelHandle


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
        if context.text_baseline is None:
            raise ModelError(
                "method 'token_occlusion' explains text probes (token ids); for other inputs use occlusion"
            )
        baseline = context.text_baseline
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
        if context.text_baseline is None:
            raise ModelError(
                f"method {self.name!r} explains text probes (token ids); for other inputs use "
                f"{self.name.removeprefix('token_')}"
            )
        groups, replaced = _token_groups(x, context.text_baseline)
        values = self._explain(handle, x, context.text_baseline, target, groups, context)
        return Attribution(torch.where(replaced, values[..., 0], 0.0))


@register("token_kernel_shap")
class TokenKernelShap(_TokenPerturbation, KernelShap):
    """Shapley values of the tokens from a weighted linear fit to ``n_samples`` random coalitions."""


@register("token_lime")
class TokenLime(_TokenPerturbation, Lime):
    """A linear surrogate of the tokens fitted near the input, weighted by similarity."""
