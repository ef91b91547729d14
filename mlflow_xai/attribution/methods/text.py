"""Methods over tokens that are not Integrated Gradients: occlusion one token at a time.

They take what ``layer_integrated_gradients`` takes (``mlflow_xai.model.text``): each sample's
embeddings with its row as the last feature, and the baseline's in ``AttributionContext``.
"""

from __future__ import annotations

import torch

from mlflow_xai.attribution.methods.base import Attribution, AttributionContext, AttributionMethod, register
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
