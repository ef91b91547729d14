"""Create the registry webhook, register a model version, and wait for it to arrive audited.

Start the two servers first (see run.sh beside this file), then:

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 MLFLOW_XAI_WEBHOOK_SECRET=... \
        python examples/registry/register_and_wait.py --receiver http://127.0.0.1:8765

The webhook is created once (model_version.created, signed with the secret from the environment);
each run of this script registers a new version of "xai-demo" and prints the tags the receiver
sets on it: xai.gate (pass, warn, fail or error) and xai.audit_run_id.
"""

from __future__ import annotations

import argparse
import os
import time

import mlflow
import torch.nn as nn
from mlflow import MlflowClient
from mlflow.entities.webhook import WebhookEvent

MODEL = "xai-demo"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receiver", default="http://127.0.0.1:8765", help="where mlflow-xai serve listens")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    secret = os.environ["MLFLOW_XAI_WEBHOOK_SECRET"]
    client = MlflowClient()
    url = f"{args.receiver}/webhook"
    if not any(w.url == url for w in client.list_webhooks()):
        client.create_webhook(
            name="mlflow-xai", url=url, events=[WebhookEvent("model_version", "created")], secret=secret
        )
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))  # stands in for your model
    with mlflow.start_run(run_name="train"):
        info = mlflow.pytorch.log_model(
            model, name="model", serialization_format="pickle", registered_model_name=MODEL
        )
    version = str(info.registered_model_version)
    print(f"registered {MODEL} version {version}; waiting for its audit ...")
    end = time.monotonic() + args.timeout
    while time.monotonic() < end:
        tags = client.get_model_version(MODEL, version).tags
        if "xai.gate" in tags:
            print(f"xai.gate = {tags['xai.gate']}, audit run {tags.get('xai.audit_run_id', '-')}")
            return 0 if tags["xai.gate"] != "error" else 1
        time.sleep(2)
    print("no audit tag yet: is mlflow-xai serve running, and can the server reach it?")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
