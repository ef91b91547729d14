"""Verifying an MLflow webhook delivery before anything else is done with it.

MLflow signs ``<delivery id>.<unix timestamp>.<body>`` with HMAC-SHA256 under the webhook's
secret and sends ``X-MLflow-Signature: v1,<base64 digest>``, ``X-MLflow-Timestamp`` and
``X-MLflow-Delivery-Id``. A delivery is accepted only when all three are there, the timestamp is
within ``max_age`` seconds of now (a captured request cannot be replayed later), and the digest
matches (compared in constant time). The payload must then be the JSON MLflow sends for a model
version event, with a model name and a version number: nothing else is taken from it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
#: The events the receiver acts on: (entity, action) as MLflow names them.
EVENTS = {("model_version", "created"), ("model_version_alias", "created")}


class Rejected(Exception):
    """A delivery refused, with the HTTP status to answer and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    event: tuple[str, str]
    name: str
    version: str
    alias: str | None


def sign(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    """The signature MLflow sends for ``body`` (also what a test sends)."""
    digest = hmac.new(
        secret.encode("utf-8"), f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256
    ).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float, max_age: float = 300.0
) -> Delivery:
    """The delivery in ``body`` if it is signed with ``secret``, fresh and well formed; else
    ``Rejected`` (401 for a missing or wrong signature, 400 for a malformed one or a stale or
    malformed delivery, 422 for an event this receiver does not handle)."""
    lower = {k.lower(): v for k, v in headers.items()}
    signature = lower.get(SIGNATURE_HEADER.lower())
    timestamp = lower.get(TIMESTAMP_HEADER.lower())
    delivery_id = lower.get(DELIVERY_HEADER.lower())
    if not signature or not timestamp or not delivery_id:
        raise Rejected(
            401, "unsigned delivery: the signature, timestamp and delivery id headers are required"
        )
    if not timestamp.isdigit():
        raise Rejected(400, "the timestamp header is not a unix time")
    if abs(now - int(timestamp)) > max_age:
        raise Rejected(400, f"stale delivery: its timestamp is more than {max_age:g} s from now")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "the body is not UTF-8") from None
    if not hmac.compare_digest(signature.encode(), sign(secret, delivery_id, timestamp, text).encode()):
        raise Rejected(401, "the signature does not match the body under the webhook secret")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        raise Rejected(400, "the body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise Rejected(400, "the body is not an MLflow webhook payload (entity, action, data)")
    event = (payload.get("entity"), payload.get("action"))
    if event not in EVENTS:
        raise Rejected(422, f"event {event[0]}.{event[1]} is not handled; send model_version.created")
    data = payload["data"]
    name, version = data.get("name"), data.get("version")
    if not isinstance(name, str) or not name or not isinstance(version, str) or not version.isdigit():
        raise Rejected(400, "the payload needs a model name and a version number")
    alias = data.get("alias") if event[0] == "model_version_alias" else None
    if alias is not None and not isinstance(alias, str):
        raise Rejected(400, "the alias must be a string")
    return Delivery(delivery_id, event, name, version, alias)
