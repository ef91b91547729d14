"""Occlusion with batched perturbations against Captum's default of one perturbation per pass.

Both runs occlude the same windows of the same inputs on the example CNN, so their results must be
equal up to float summation order; only the number of forward passes differs.

    python benchmarks/occlusion.py [--samples 1 4 16 32] [--per-eval N] [--images-per-pass N]
                                   [--repeats 5]

Ours is mlflow-xai's occlusion adapter (its own implementation of Captum's semantics: many windows
per forward pass, masks built per pass from per-axis intervals). The speed-up is largest when a
batch is small: with a large batch each of Captum's one-perturbation passes already keeps the CPU
busy, and both sides approach the cost of the forward passes themselves. The two sides alternate
run by run, so a shared machine's load falls on both alike.
"""

from __future__ import annotations

import argparse
import time

import torch
from _allocator import add_allocator_option, set_allocator
from captum.attr import Occlusion as CaptumOcclusion

from mlflow_xai.attribution.methods import build
from mlflow_xai.config import OcclusionConfig
from mlflow_xai.datasets import make_shapes
from mlflow_xai.datasets.cnn import train_shapes_cnn
from mlflow_xai.model import ModelHandle, audit_mode


def best_of(repeats: int, *runs) -> list[tuple[float, torch.Tensor]]:
    """Best time and result of each run, the runs taking turns."""
    times, results = [[] for _ in runs], [None] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            started = time.perf_counter()
            results[i] = run()
            times[i].append(time.perf_counter() - started)
    return [(min(t), r) for t, r in zip(times, results, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples", type=int, nargs="+", default=[1, 4, 16, 32], help="images per batch explained"
    )
    parser.add_argument(
        "--per-eval",
        type=int,
        default=None,
        help="our perturbations_per_eval (default: auto, --images-per-pass images a pass)",
    )
    parser.add_argument(
        "--images-per-pass",
        type=int,
        default=128,
        help="our internal_batch_size: occluded images per forward pass when --per-eval is auto",
    )
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs")
    add_allocator_option(parser)
    args = parser.parse_args()
    set_allocator(args)

    model = train_shapes_cnn(make_shapes(256, seed=0), epochs=2)
    handle = ModelHandle(model, torch.device("cpu"))
    config = OcclusionConfig(
        sliding_window_shapes=[3, 8, 8],
        strides=[3, 4, 4],
        perturbations_per_eval=args.per_eval,
        internal_batch_size=args.images_per_pass,
    )
    adapter = build("occlusion", config)
    captum = CaptumOcclusion(handle.scores)
    windows = ((32 - 8) // 4 + 1) ** 2
    print(
        f"example CNN on {torch.get_num_threads()} CPU threads; 3x32x32 images, window 3x8x8, "
        f"stride 3x4x4: {windows} windows per image; best of {args.repeats} runs"
    )
    ours_head = f"ppe={args.per_eval or f'auto/{args.images_per_pass}'} (ms)"
    print(f"{'batch':>5} {'ppe=1 (ms)':>10} {ours_head:>15} {'speed-up':>9} {'max|diff|':>10}")
    for n in args.samples:
        x = torch.from_numpy(make_shapes(n, seed=1).images)
        with audit_mode(model), torch.no_grad():
            target = handle.scores(x).argmax(dim=1)
            (ours_s, ours), (default_s, default) = best_of(
                args.repeats,
                lambda x=x, target=target: adapter.attribute(handle, x, target).values,
                lambda x=x, target=target: captum.attribute(
                    x,
                    sliding_window_shapes=tuple(config.sliding_window_shapes),
                    strides=tuple(config.strides),
                    baselines=config.baseline,
                    target=target,
                ),
            )
        diff = (ours - default).abs().max().item()
        print(
            f"{n:>5} {1e3 * default_s:>10.2f} {1e3 * ours_s:>15.2f} {default_s / ours_s:>8.1f}x {diff:>10.3g}"
        )


if __name__ == "__main__":
    main()
