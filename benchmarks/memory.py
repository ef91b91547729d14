"""Peak memory of an audit against the size of its probe set (a memory-mapped .npy file).

Each size runs in a fresh Python process, which reports its resident-set high-water mark
(``getrusage``'s ``ru_maxrss``, which counts mapped file pages as well as allocations) once
imports and the model are loaded, and again after the audit. The audit streams the probe in batches
and its attributions to memory-mapped files, so its peak should not grow with the probe set.

    python benchmarks/memory.py [--sizes 256 4096] [--steps 8]

The probe files are written first, by this parent process, chunk by chunk.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _allocator import add_allocator_option, set_allocator


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_probe(path: Path, n: int, size: int) -> None:
    from mlflow_xai.datasets import make_shapes

    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 3, size, size))
    for start in range(0, n, 256):
        stop = min(n, start + 256)
        array[start:stop] = make_shapes(stop - start, size=size, seed=start).images
    array.flush()
    del array


def child(path: str, steps: int, size: int, keep_pages: bool) -> None:
    import torch

    from mlflow_xai.datasets.cnn import ShapesCNN
    from mlflow_xai.distributed import ray
    from mlflow_xai.engine import accumulate, audit, run
    from mlflow_xai.probe import loaders, memory, probe_set

    if keep_pages:  # for comparison: mapped pages stay resident once read or written
        for module in (accumulate, run, ray, loaders, memory, probe_set):
            module.release_pages = lambda array: None

    torch.manual_seed(0)
    model = ShapesCNN().eval()
    config = {
        "device": "cpu",
        "batch_size": 32,
        "methods": {"integrated_gradients": {"n_steps": steps}},
        "artifacts": {"sheet_samples": 0},
    }
    audit(model, np.zeros((2, 3, size, size), np.float32), config)  # warm: lazy imports, allocator
    before = peak_mib()
    report = audit(model, path, config)
    after = peak_mib()
    print(json.dumps({"samples": len(report.probe), "before_mib": before, "peak_mib": after}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 4096], help="probe samples")
    parser.add_argument("--steps", type=int, default=8, help="IG n_steps (memory does not depend on it)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument(
        "--keep-pages", action="store_true", help="do not drop mapped pages after use (comparison)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    add_allocator_option(parser)
    args = parser.parse_args()
    set_allocator(args, quiet=bool(args.child))
    if args.child:
        child(args.child, args.steps, args.size, args.keep_pages)
        return

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"probe_{n}.npy"
            write_probe(path, n, args.size)
            command = [sys.executable, __file__, "--child", str(path), "--steps", str(args.steps)]
            command += ["--size", str(args.size)] + (["--keep-pages"] if args.keep_pages else [])
            command += ["--default-allocator"] if args.default_allocator else []
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            path.unlink()
    sample_mib = 3 * args.size * args.size * 4 / 2**20
    side = args.size
    print(f"probe: memory-mapped .npy of float32 [3, {side}, {side}] ({sample_mib * 1024:.0f} KiB a sample)")
    print(f"{'samples':>8} {'probe MiB':>10} {'RSS peak before audit':>22} {'RSS peak after audit':>21}")
    for r in results:
        print(
            f"{r['samples']:>8} {r['samples'] * sample_mib:>10.1f} {r['before_mib']:>18.1f} MiB"
            f" {r['peak_mib']:>17.1f} MiB"
        )
    first, last = results[0], results[-1]
    growth = last["peak_mib"] / first["peak_mib"] - 1
    audit_growth = (last["peak_mib"] - last["before_mib"]) - (first["peak_mib"] - first["before_mib"])
    print(
        f"peak RSS grows {100 * growth:+.1f}% from {first['samples']} to {last['samples']} samples "
        f"(the audit's own rise above the warmed process: {audit_growth:+.1f} MiB); target < 15%"
    )


if __name__ == "__main__":
    main()
