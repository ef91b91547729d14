"""Audit a logged PyTorch image classifier with mlflow.models.evaluate and the xai evaluator.

    python examples/audit_model.py MODEL_URI probe.npz [--config configs/default.yaml]
"""

from __future__ import annotations

import argparse

import mlflow

from mlflow_xai.cli.console import summary_table
from mlflow_xai.probe import ProbeSet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_uri")
    parser.add_argument("probe", help=".npz with 'inputs' and optional 'labels', 'masks', 'ids'")
    parser.add_argument("--config", help="audit config YAML")
    args = parser.parse_args()
    probe = ProbeSet.from_npz(args.probe)
    with mlflow.start_run(run_name="xai-audit") as run:
        result = mlflow.models.evaluate(
            args.model_uri,
            data=probe.inputs.reshape(len(probe), -1),
            targets=probe.labels,
            model_type="image_classifier",
            evaluators=["xai"],
            evaluator_config={"xai": {"config": args.config} if args.config else {}},
        )
    print(summary_table(result.metrics))
    print(f"audit run {run.info.run_id}")


if __name__ == "__main__":
    main()
