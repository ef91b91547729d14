"""Train the example CNN on synthetic shapes and log it to MLflow, keeping a held-out probe set.

    python examples/train_shapes.py [--serialization-format pt2|pickle] [--epochs 10]

Nothing is downloaded: the images are generated from a seed (see mlflow_xai.datasets.shapes).
The model is logged with a tensor signature and an input example to the tracking store MLflow
resolves (MLFLOW_TRACKING_URI, or sqlite:///mlflow.db in the working directory); the probe set is
logged beside it as probe/probe.npz and also written to ./probe.npz.
"""

from __future__ import annotations

import argparse

import numpy as np

from mlflow_xai.cli.demo import shapes_split, train_and_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serialization-format", choices=["pt2", "pickle"], default="pickle")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    run_id, model_uri, accuracy = train_and_log(
        serialization_format=args.serialization_format, epochs=args.epochs
    )
    _, probe = shapes_split()
    np.savez_compressed(
        "probe.npz", inputs=probe.images, labels=probe.labels, masks=probe.masks, ids=probe.ids
    )
    print(f"run {run_id}\nmodel {model_uri}\nheld-out accuracy {accuracy:.3f}\nprobe set ./probe.npz")


if __name__ == "__main__":
    main()
