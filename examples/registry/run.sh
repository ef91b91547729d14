#!/usr/bin/env bash
# The registry set-up on one machine: an MLflow server with webhooks, and the audit receiver.
# Run from the repository root; stop both with Ctrl-C.
set -euo pipefail
export MLFLOW_XAI_WEBHOOK_SECRET="${MLFLOW_XAI_WEBHOOK_SECRET:-change-me}"
# Webhooks need a SQL backend. Plain http to 127.0.0.1 is allowed here for a local try only; in
# production the receiver sits behind https and these two lines go.
export MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https"
export MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true"
python - <<'PY'
import numpy as np
x = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
np.savez("registry_probe.npz", inputs=x, labels=(x[:, 0] > 0).astype(np.int64))
PY
# One server worker: MLflow encrypts webhook secrets with MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY, and
# without one each worker makes its own, so a secret stored by one cannot be read by another (set
# the key to run several workers).
mlflow server --backend-store-uri sqlite:///registry.db --host 127.0.0.1 --port 5000 --workers 1 &
SERVER=$!
trap 'kill $SERVER' EXIT
MLFLOW_TRACKING_URI=http://127.0.0.1:5000 mlflow-xai serve --probe registry_probe.npz \
    --baseline-alias champion --assign-alias audited --port 8765
