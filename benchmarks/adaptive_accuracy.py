"""How accurate adaptive IG really is: its attributions against independent high-step references.

The step change adaptive IG reports is an error estimate, not a bound. This measures, on two models
the tests do not contain, how often a sample it calls converged is in truth outside the tolerance,
and what the marking share (``mlflow_xai.adaptive.MARKING_FRACTION``) and the first partition
(``min_steps``) cost and buy:

* a ReLU/tanh MLP (6-16-16-3, random weights), 200 random inputs and baselines, against a
  20,000-node midpoint reference: kinks and smooth stretches on the same path;
* the demo's shapes CNN (ReLU, max-pool), 48 held-out images with the zero baseline, against a
  4096-node midpoint reference (no node shared with the adaptive rule's dyadic grid): thousands of
  small jumps along every path.

    .venv/bin/python benchmarks/adaptive_accuracy.py [--fractions 0.1 0.3] [--min-steps 9 17 33]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
from _allocator import add_allocator_option, set_allocator

import mlflow_xai.attribution.adaptive as adaptive
from mlflow_xai.attribution.adaptive import adaptive_integrated_gradients
from mlflow_xai.attribution.methods.integrated_gradients import integrated_gradients
from mlflow_xai.checks.convergence import step_change_rel_l2
from mlflow_xai.datasets import make_shapes
from mlflow_xai.datasets.cnn import train_shapes_cnn

COMPLETENESS_TOL, STEP_CHANGE_TOL = 0.01, 0.02


def mixed_mlp(seed: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    return model.double().eval().requires_grad_(False)


def shapes_cnn(probe: int) -> tuple[nn.Module, torch.Tensor]:
    data = make_shapes(5000 + probe, seed=0)
    model = train_shapes_cnn(data.subset(slice(0, 5000)), epochs=10, seed=0).requires_grad_(False)
    return model, torch.from_numpy(data.subset(slice(5000, None)).images)


def study(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    reference_steps: int,
    rule: str,
    settings: list[tuple[float, int]],
    batch_size: int,
) -> None:
    with torch.no_grad():
        target = model(x).argmax(1)

    def f(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(z).gather(1, t.view(-1, 1)).squeeze(1)

    def in_batches(method, **kwargs) -> list:
        """``method`` on each batch of ``batch_size`` samples."""
        spans = [slice(s, s + batch_size) for s in range(0, len(x), batch_size)]
        return [method(f, x[b], baseline[b], target[b], **kwargs) for b in spans]

    started = time.perf_counter()
    reference = torch.cat(in_batches(integrated_gradients, n_steps=reference_steps, rule=rule))
    print(
        f"\n{name}: {len(x)} samples; reference {rule} n={reference_steps} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    print(
        f"{'marking':>8} {'min_steps':>9} {'evals':>7} {'steps min-med-max':>18} "
        f"{'converged':>10} {'true > tol':>11} {'true max':>9} "
        f"{'true / reported (min-median-max)':>34}"
    )
    for fraction, min_steps in settings:
        adaptive.MARKING_FRACTION = fraction
        parts = in_batches(
            adaptive_integrated_gradients,
            completeness_tolerance=COMPLETENESS_TOL,
            step_change_tolerance=STEP_CHANGE_TOL,
            min_steps=min_steps,
        )
        attributions = torch.cat([p.attributions for p in parts])
        converged = torch.cat([p.converged for p in parts])
        reported = torch.cat([p.step_change_rel_l2 for p in parts])
        steps = torch.cat([p.steps for p in parts])
        evals = int(steps.sum())
        spread = f"{int(steps.min())}-{int(steps.median())}-{int(steps.max())}"
        true = step_change_rel_l2(attributions, reference)[converged]
        ratio = (true / reported[converged]).quantile(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
        print(
            f"{fraction:>8} {min_steps:>9} {evals:>7} {spread:>18} {int(converged.sum()):>5}/{len(x):<4} "
            f"{int((true > STEP_CHANGE_TOL).sum()):>11} {true.max():>9.4f} "
            f"{ratio[0]:>20.2f}-{ratio[1]:.2f}-{ratio[2]:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--min-steps", type=int, nargs="+", default=[33], help="first checks' sizes")
    parser.add_argument("--threads", type=int, default=2)
    add_allocator_option(parser)
    args = parser.parse_args()
    set_allocator(args)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=generator, dtype=torch.float64) * 2
    baseline = torch.randn(200, 6, generator=generator, dtype=torch.float64) * 2
    settings = [(fraction, m) for m in args.min_steps for fraction in args.fractions]
    study("ReLU/tanh MLP 6-16-16-3", mixed_mlp(), x, baseline, 20_000, "midpoint", settings, 200)
    model, images = shapes_cnn(48)
    study("shapes CNN", model, images, torch.zeros_like(images), 4096, "midpoint", settings, 16)


if __name__ == "__main__":
    main()
