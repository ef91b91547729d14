"""Size of the artifacts an audit logs: 1,000 probe samples of 3x32x32 with the default config.

Run: .venv/bin/python benchmarks/artifact_size.py [--samples 1000]
Prints the total size of the xai/ folder and its largest files. The budget is 20 MB.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from mlflow_xai.artifacts import write_artifacts
from mlflow_xai.config import load_config
from mlflow_xai.datasets import make_shapes
from mlflow_xai.datasets.cnn import train_shapes_cnn
from mlflow_xai.engine import audit
from mlflow_xai.probe import ProbeSet

BUDGET_BYTES = 20 * 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = make_shapes(600 + args.samples, size=32, seed=0)
    model = train_shapes_cnn(data.subset(slice(0, 600)), epochs=2, seed=0)
    probe_data = data.subset(slice(600, None))
    probe = ProbeSet(probe_data.images, probe_data.labels, probe_data.masks, probe_data.ids)
    config = load_config()  # the defaults: integrated_gradients + occlusion, float16 masks
    started = time.perf_counter()
    report = audit(model, probe, config)
    audited = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        write_artifacts(report, folder)
        written = time.perf_counter() - started
        files = sorted((p for p in Path(folder).rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)
        total = sum(p.stat().st_size for p in files)
        print(f"{len(probe)} samples of {probe.input_shape}, methods: {', '.join(report.methods)}")
        print(f"audit {audited:.1f} s, writing artifacts {written:.1f} s")
        print(f"total {total / 1e6:.2f} MB ({total / 2**20:.2f} MiB) in {len(files)} files")
        for p in files[:8]:
            print(f"  {p.stat().st_size / 1e6:8.3f} MB  {p.relative_to(folder)}")
        print("within the 20 MiB budget" if total <= BUDGET_BYTES else "OVER the 20 MiB budget")


if __name__ == "__main__":
    main()
