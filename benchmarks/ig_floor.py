"""Integrated Gradients against its floor: a bare loop of the same forward/backward passes.

IG with ``n_steps`` nodes over N samples evaluates the gradient at N * n_steps interpolated inputs,
``internal_batch_size`` at a time. The floor is a loop doing exactly those passes on inputs built
in advance: a forward pass, the target column, ``autograd.grad`` and nothing else. The ratio says
what everything around the passes costs (building the points, weighting and summing gradients,
the endpoints F(x) and F(x'), moving batches in and out of the probe set).

    python benchmarks/ig_floor.py [--samples 256] [--steps 32] [--repeats 5]

Runs are interleaved (floor, IG, floor, IG, ...) and the medians compared, so that load from other
processes on the machine falls on both sides alike. The cost of a pass does not depend on the
weights, so the model is an untrained example CNN.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _allocator import add_allocator_option, set_allocator

from mlflow_xai.config import load_config
from mlflow_xai.datasets import make_shapes
from mlflow_xai.datasets.cnn import ShapesCNN
from mlflow_xai.engine import audit


def bare_loop(model: torch.nn.Module, points: torch.Tensor, target: torch.Tensor, batch: int) -> None:
    """Forward and backward passes over ``points``, ``batch`` at a time: the least IG can cost."""
    for start in range(0, len(points), batch):
        x = points[start : start + batch].requires_grad_(True)
        out = model(x).gather(1, target[start : start + batch].view(-1, 1)).sum()
        torch.autograd.grad(out, x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256, help="probe samples explained")
    parser.add_argument("--steps", type=int, default=32, help="IG n_steps (gradient evaluations)")
    parser.add_argument("--batch-size", type=int, default=32, help="probe samples per batch")
    parser.add_argument("--internal-batch-size", type=int, default=512, help="points per pass")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs of each")
    add_allocator_option(parser)
    args = parser.parse_args()
    set_allocator(args)

    torch.manual_seed(0)
    model = ShapesCNN().eval().requires_grad_(False)
    images = make_shapes(args.samples, size=args.size, seed=0).images
    config = load_config(
        {
            "device": "cpu",
            "batch_size": args.batch_size,
            "methods": {
                "integrated_gradients": {
                    "n_steps": args.steps,
                    "internal_batch_size": args.internal_batch_size,
                }
            },
            "artifacts": {"sheet_samples": 0},
        }
    )
    # The floor's inputs: the same number of points, built before the clock starts.
    total = args.samples * args.steps
    points = torch.rand(total, *images.shape[1:])
    target = torch.randint(0, 4, (total,))

    floor_s, audit_s, method_s = [], [], []
    bare_loop(model, points[: args.internal_batch_size], target, args.internal_batch_size)  # warm up
    for _ in range(args.repeats):
        started = time.perf_counter()
        bare_loop(model, points, target, args.internal_batch_size)
        floor_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        report = audit(model, images, config)
        audit_s.append(time.perf_counter() - started)
        method_s.append(report.methods["integrated_gradients"].seconds)
        del report

    floor, whole, method = (statistics.median(v) for v in (floor_s, audit_s, method_s))
    print(
        f"{args.samples} samples x {args.steps} steps = {total} points of {list(images.shape[1:])}, "
        f"{args.internal_batch_size} per pass, probe batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, {args.repeats} interleaved runs (medians)"
    )
    print(f"bare forward+backward loop  {floor:8.3f} s")
    print(f"IG method time              {method:8.3f} s   {method / floor:5.2f}x the loop")
    print(f"whole audit (IG only)       {whole:8.3f} s   {whole / floor:5.2f}x the loop")
    print("target: IG <= 1.15x the loop")
    print("per-run ratios IG/loop:", " ".join(f"{m / f:.2f}" for m, f in zip(method_s, floor_s, strict=True)))


if __name__ == "__main__":
    main()
