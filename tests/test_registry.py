"""The registry webhook receiver: signatures as MLflow makes them, the durable queue, the answers."""

from __future__ import annotations

import json
import time

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from mlflow_xai.registry.queue import JobQueue
from mlflow_xai.registry.server import Receiver
from mlflow_xai.registry.signature import Rejected, verify
from mlflow_xai.registry.worker import ServeSettings

SECRET = "s3cret"


def _delivery(
    data: dict, *, entity="model_version", action="created", secret=SECRET, delivery_id="d-1", age=0.0
):
    body = json.dumps({"entity": entity, "action": action, "timestamp": "now", "data": data})
    timestamp = str(int(time.time() - age))
    headers = {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": timestamp,
        # MLflow's own signing function: the receiver must accept what MLflow sends.
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, timestamp, body),
    }
    return headers, body.encode()


def test_a_delivery_signed_as_mlflow_signs_it_is_accepted():
    headers, body = _delivery({"name": "m", "version": "3", "source": "models:/evil", "run_id": "x"})
    delivery = verify(SECRET, headers, body, now=time.time())
    assert (delivery.name, delivery.version, delivery.event) == ("m", "3", ("model_version", "created"))
    alias = verify(
        SECRET,
        *_delivery({"name": "m", "version": "2", "alias": "x"}, entity="model_version_alias"),
        now=time.time(),
    )
    assert alias.alias == "x"


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        (lambda h, b: ({k: v for k, v in h.items() if k != "X-MLflow-Signature"}, b), 401, "unsigned"),
        (lambda h, b: (h, b.replace(b'"3"', b'"4"')), 401, "does not match"),
        (lambda h, b: ({**h, "X-MLflow-Timestamp": "yesterday"}, b), 400, "not a unix time"),
    ],
)
def test_unsigned_tampered_and_malformed_deliveries_are_refused(change, status, reason):
    headers, body = change(*_delivery({"name": "m", "version": "3"}))
    with pytest.raises(Rejected, match=reason) as err:
        verify(SECRET, headers, body, now=time.time())
    assert err.value.status == status


def test_stale_forged_and_unhandled_deliveries_are_refused():
    with pytest.raises(Rejected, match="stale") as err:
        verify(SECRET, *_delivery({"name": "m", "version": "3"}, age=600), now=time.time(), max_age=300)
    assert err.value.status == 400
    with pytest.raises(Rejected, match="does not match") as err:
        verify(SECRET, *_delivery({"name": "m", "version": "3"}, secret="guess"), now=time.time())
    assert err.value.status == 401
    with pytest.raises(Rejected, match="not handled") as err:
        verify(SECRET, *_delivery({"name": "m"}, entity="registered_model"), now=time.time())
    assert err.value.status == 422
    with pytest.raises(Rejected, match="version number"):
        verify(SECRET, *_delivery({"name": "m", "version": "3; rm -rf /"}), now=time.time())
    headers, _ = _delivery({"name": "m", "version": "3"})
    garbage = b"not json"
    headers["X-MLflow-Signature"] = _generate_hmac_signature(
        SECRET, headers["X-MLflow-Delivery-Id"], headers["X-MLflow-Timestamp"], "not json"
    )
    with pytest.raises(Rejected, match="not JSON"):
        verify(SECRET, headers, garbage, now=time.time())


def test_the_queue_audits_a_version_once_and_ignores_repeated_deliveries(tmp_path):
    queue = JobQueue(tmp_path / "q.sqlite")
    assert queue.accept("d-1", "m", "1") is True
    assert queue.accept("d-1", "m", "1") is False  # the same delivery, retried or replayed
    assert queue.accept("d-2", "m", "1") is True  # another delivery naming the same version
    assert queue.counts() == {"pending": 1}
    job = queue.claim()
    assert (job.name, job.version, job.attempts) == ("m", "1", 0)
    assert queue.claim() is None  # running, not claimed twice


def test_a_killed_receivers_running_jobs_resume_and_failures_back_off_then_error(tmp_path):
    queue = JobQueue(tmp_path / "q.sqlite")
    queue.accept("d-1", "m", "1")
    job = queue.claim()
    queue.set_run(job, "run-1")
    again = JobQueue(tmp_path / "q.sqlite")  # a new receiver on the same file
    assert again.recover() == 1
    resumed = again.claim()
    assert resumed.run_id == "run-1"  # the same audit run, finished with --resume
    assert again.fail(resumed, "boom", max_attempts=2, backoff=10.0, now=1000.0) is True
    assert again.claim(now=1005.0) is None  # backing off for 10 s
    retried = again.claim(now=1010.0)
    assert retried.attempts == 1
    assert again.fail(retried, "boom again", max_attempts=2, backoff=10.0, now=1011.0) is False
    assert again.state("m", "1") == ("error", 2, "boom again")


def test_the_receiver_answers_202_for_work_200_for_repeats_and_4xx_for_refusals(tmp_path):
    queue = JobQueue(tmp_path / "q.sqlite")
    receiver = Receiver(ServeSettings(probe="p.npz", baseline_alias="champion"), queue, secret=SECRET, port=0)
    try:
        headers, body = _delivery({"name": "m", "version": "5"})
        assert receiver.accept(headers, body)[0] == 202
        assert receiver.accept(headers, body)[0] == 200  # replayed: no new work
        alias = _delivery(
            {"name": "m", "version": "4", "alias": "champion"},
            entity="model_version_alias",
            delivery_id="d-2",
        )
        assert receiver.accept(*alias)[0] == 200  # the champion moved: nothing to audit
        forged = _delivery({"name": "m", "version": "6"}, secret="guess", delivery_id="d-3")
        assert receiver.accept(*forged)[0] == 401
        assert queue.counts() == {"pending": 1}
    finally:
        receiver.server.server_close()


def test_serve_refuses_to_start_without_the_secret(monkeypatch, tmp_path):
    from mlflow_xai.cli.commands import main

    monkeypatch.delenv("MLFLOW_XAI_WEBHOOK_SECRET", raising=False)
    assert main(["serve", "--probe", str(tmp_path / "p.npz")]) == 2
