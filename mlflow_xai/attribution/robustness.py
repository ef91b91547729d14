"""Infidelity and max-sensitivity (Yeh et al. 2019) through ``captum.metrics``, seeded per sample.

* infidelity: E_I[(I . a - (F(x) - F(x - I)))^2] over Gaussian perturbations I of standard deviation
  ``noise_scale``: how far the attribution's linear prediction of a perturbation's effect is from
  the model's. A gradient on a linear model predicts it exactly (infidelity 0).
* max-sensitivity: the largest change ||a(x + d) - a(x)|| / ||a(x)|| of the attribution over
  ``n_perturb_samples`` uniform perturbations d in [-radius, radius]: how fragile the explanation is.

Both run one sample at a time with the random generators seeded by (seed, the sample's position),
so a sample's value does not depend on its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from captum.metrics import infidelity, sensitivity_max

from mlflow_xai.attribution.methods.base import seeded
from mlflow_xai.seeding import sample_seed

#: The per-sample quantities, as ``Attribution.extras`` names them (float, one per sample).
INFIDELITY_QUANTITIES = ("infidelity",)
SENSITIVITY_QUANTITIES = ("sensitivity_max",)


def infidelity_per_sample(
    f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    positions: Sequence[int],
    *,
    noise_scale: float,
    n_perturb_samples: int,
    seed: int,
) -> torch.Tensor:
    """Captum's infidelity of ``attributions`` for each sample, (B,) float64."""

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn_like(inputs) * noise_scale
        return noise, inputs - noise

    def forward(points: torch.Tensor, target_class: torch.Tensor) -> torch.Tensor:
        return f(points, target_class.expand(len(points)))

    out = []
    for i, position in enumerate(positions):
        with seeded(sample_seed(seed, int(position), "infidelity"), x.device), torch.no_grad():
            value = infidelity(
                forward,
                perturb,
                x[i : i + 1],
                attributions[i : i + 1],
                additional_forward_args=(target[i : i + 1],),
                n_perturb_samples=n_perturb_samples,
            )
        out.append(value.double().reshape(1))
    return torch.cat(out)


def sensitivity_per_sample(
    explain: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
    positions: Sequence[int],
    *,
    radius: float,
    n_perturb_samples: int,
    seed: int,
) -> torch.Tensor:
    """Captum's max-sensitivity of ``explain(points, target, position)`` for each sample, (B,) float64."""
    out = []
    for i, position in enumerate(positions):

        def explanation(points: tuple[torch.Tensor], position: int = int(position), row: int = i) -> tuple:
            # Captum passes its inputs as a tuple of tensors, wants a tuple back, and runs under no_grad.
            (inputs,) = points
            with torch.enable_grad():
                return (explain(inputs, target[row : row + 1].expand(len(inputs)), position),)

        with seeded(sample_seed(seed, int(position), "sensitivity"), x.device):
            value = sensitivity_max(
                explanation,
                x[i : i + 1],
                perturb_radius=radius,
                n_perturb_samples=n_perturb_samples,
            )
        out.append(value.double().reshape(1))
    return torch.cat(out)
