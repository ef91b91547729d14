"""Deletion and insertion against a bare forward loop over the same perturbed inputs.

    python benchmarks/faithfulness.py [--model resnet18|cnn] [--size 64] [--samples 8]
                                      [--steps 10] [--draws 3] [--batch 128] [--repeats 3]

The check evaluates 2 + 2 (1 + draws) (steps - 1) forward passes a sample (both curves of the
method's ranking and of each random ranking, whose ends F(x) and F(x') are shared). The floor is the
least any implementation must spend: the same number of images, already built, pushed through the
model in passes of the same size under ``no_grad``. The ratio is what ranking, masking and building
the perturbed images add (issue target: <= 1.15x). The two sides take turns, best of ``--repeats``.
Random weights: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

from mlflow_xai.checks.faithfulness import deletion_insertion
from mlflow_xai.datasets.cnn import ShapesCNN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["resnet18", "cnn"], default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    if args.model == "resnet18":
        model = torchvision.models.resnet18(num_classes=10).eval()
    else:
        model = ShapesCNN().eval()
    x = torch.rand(args.samples, 3, args.size, args.size)
    with torch.no_grad():
        target = model(x).argmax(1)
    attributions = torch.randn_like(x)
    baseline = torch.zeros_like(x)

    def f(points: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(points).gather(1, t.view(-1, 1)).squeeze(1)

    passes = 2 + 2 * (1 + args.draws) * (args.steps - 1)
    images = passes * args.samples
    pool = torch.rand(min(images, args.batch), 3, args.size, args.size)  # built once: not timed
    pool_target = target.repeat(len(pool) // len(target) + 1)[: len(pool)]

    def check() -> None:
        deletion_insertion(
            f, x, baseline, target, attributions, list(range(args.samples)),
            steps=args.steps, features="pixels", random_draws=args.draws, batch=args.batch,
        )  # fmt: skip

    def floor() -> None:
        with torch.no_grad():
            for start in range(0, images, args.batch):
                n = min(args.batch, images - start)
                f(pool[:n], pool_target[:n])

    times = {"check": [], "floor": []}
    for _ in range(args.repeats):
        for name, run in (("check", check), ("floor", floor)):
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    best = {name: min(t) for name, t in times.items()}
    print(
        f"{args.model} at {args.size} px, {args.samples} samples, steps {args.steps}, draws {args.draws}, "
        f"batch {args.batch}, {torch.get_num_threads()} threads"
    )
    print(f"forward passes per sample: {passes} ({images} images in all)")
    print(f"deletion+insertion: {best['check']:.2f} s   bare forward loop: {best['floor']:.2f} s")
    print(f"ratio: {best['check'] / best['floor']:.3f}x  (target <= 1.15x)")


if __name__ == "__main__":
    main()
