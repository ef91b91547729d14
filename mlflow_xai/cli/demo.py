"""The demo behind ``make demo``: train (or reuse) the shapes CNN, log it, audit it, say where to look.

It uses whatever tracking store MLflow resolves: ``MLFLOW_TRACKING_URI`` if set, otherwise the
local ``sqlite:///mlflow.db`` in the working directory.
"""

from __future__ import annotations

import time

import numpy as np

from mlflow_xai.cli.console import summary_table

EXPERIMENT = "mlflow-xai-demo"
MODEL_TAG = "mlflow_xai.demo_model"
DATA_VERSION = "shapes-v1-seed0-n6000"  # change when the generator or split changes
N_TRAIN, N_PROBE = 5000, 1000


def shapes_split():
    """The demo's training set and held-out probe set (regenerated identically every time)."""
    from mlflow_xai.datasets.shapes import make_shapes

    data = make_shapes(N_TRAIN + N_PROBE, seed=0)
    return data.subset(slice(0, N_TRAIN)), data.subset(slice(N_TRAIN, None))


def train_and_log(*, serialization_format: str = "pickle", epochs: int = 10) -> tuple[str, str, float]:
    """Train the CNN, log it with a tensor signature and an input example; return (run id, model uri, acc)."""
    import mlflow

    from mlflow_xai.datasets.cnn import accuracy, train_shapes_cnn
    from mlflow_xai.tracking.log import log_pytorch_model

    train, probe = shapes_split()
    started = time.perf_counter()
    model = train_shapes_cnn(train, epochs=epochs, seed=0)
    seconds = time.perf_counter() - started
    held_out = accuracy(model, probe)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="train-shapes-cnn") as run:
        mlflow.log_params({"epochs": epochs, "train_samples": len(train), "data": DATA_VERSION})
        mlflow.log_metrics({"heldout_accuracy": held_out, "train_seconds": seconds})
        model_uri = log_pytorch_model(model, train.images[:4], serialization_format=serialization_format)
        mlflow.set_tag(MODEL_TAG, DATA_VERSION)
        # The probe set travels with the run, so an audit can be repeated from the run alone.
        path = f"{_tmpdir()}/probe.npz"
        np.savez_compressed(path, inputs=probe.images, labels=probe.labels, masks=probe.masks, ids=probe.ids)
        mlflow.log_artifact(path, artifact_path="probe")
    return run.info.run_id, model_uri, held_out


def _tmpdir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="mlflow-xai-demo-")


def find_trained() -> tuple[str, str, float] | None:
    """A finished demo training run for the current data version, if the store has one."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return None
    runs = mlflow.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{MODEL_TAG}` = '{DATA_VERSION}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not runs:
        return None
    run = runs[0]
    models = [o for o in (run.outputs.model_outputs if run.outputs else [])]
    if not models:
        return None
    held_out = run.data.metrics.get("heldout_accuracy", float("nan"))
    return run.info.run_id, f"models:/{models[0].model_id}", held_out


def run_demo(*, config: str | None = None, retrain: bool = False, n_probe: int = 256) -> int:
    import mlflow

    from mlflow_xai.config.loading import load_config

    max_samples = load_config(config).max_samples  # a bad config fails here, before any training
    found = None if retrain else find_trained()
    if found is None:
        print("training the shapes CNN on the CPU ...", flush=True)
        train_run, model_uri, held_out = train_and_log()
    else:
        train_run, model_uri, held_out = found
        print(f"reusing the trained model of run {train_run}", flush=True)
    print(f"model {model_uri}  held-out accuracy {held_out:.3f}", flush=True)

    _, probe = shapes_split()
    probe = probe.subset(slice(0, n_probe))
    evaluator_config = {"config": config} if config else {}
    mlflow.set_experiment(EXPERIMENT)
    audited = len(probe) if max_samples is None else min(max_samples, len(probe))
    print(f"auditing {audited} of {len(probe)} probe samples ...", flush=True)
    with mlflow.start_run(run_name="xai-audit") as run:
        mlflow.set_tag("mlflow_xai.model_run_id", train_run)
        result = mlflow.models.evaluate(
            model_uri,
            data=probe.images.reshape(len(probe), -1),
            targets=probe.labels,
            model_type="image_classifier",
            evaluators=["xai"],
            evaluator_config={"xai": evaluator_config},
        )
    print()
    print(summary_table(result.metrics))
    print()
    verdict = mlflow.get_run(run.info.run_id).data.tags.get("xai.verdict", "n/a")
    print(f"verdict: {verdict}")
    print(f"audit run: {run.info.run_id} (experiment {EXPERIMENT!r})")
    store = mlflow.get_tracking_uri()
    print(f"tracking store: {store}")
    if store.startswith(("http://", "https://")):
        print(f"open it at:  {store}")
    else:
        print(f"open it with:  mlflow ui --backend-store-uri {store}   (then http://127.0.0.1:5000)")
    print("in the run's artifacts: xai/report.html (start here), xai/<method>/sheet.png and masks.npz,")
    print("xai/summary.json, xai/per_sample.csv")
    return 0
