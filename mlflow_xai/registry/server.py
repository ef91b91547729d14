"""``mlflow-xai serve``: the HTTP endpoint MLflow delivers registry webhooks to, and its workers.

``POST /webhook`` verifies the delivery (``signature``), queues its model version durably
(``queue``) and answers at once: 202 for new work, 200 for a delivery already seen, 4xx for one that
is refused, which causes no work. ``GET /health`` answers the queue's counts. ``workers`` threads
audit the queue (``worker``); on start, jobs a killed receiver left running are resumed. The
webhook secret comes from the environment (``MLFLOW_XAI_WEBHOOK_SECRET``), never from a flag.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mlflow_xai.registry.queue import JobQueue
from mlflow_xai.registry.signature import Rejected, verify
from mlflow_xai.registry.worker import ServeSettings, Worker

SECRET_ENV = "MLFLOW_XAI_WEBHOOK_SECRET"
MAX_BODY = 1 << 20  # 1 MiB: an MLflow payload is a few hundred bytes
_log = logging.getLogger(__name__)


def webhook_secret() -> str:
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise ValueError(
            f"{SECRET_ENV} is not set: the receiver verifies every delivery with the webhook's secret, "
            "taken from the environment (never from a flag, which other users can read)"
        )
    return secret


class Receiver:
    def __init__(
        self,
        settings: ServeSettings,
        queue: JobQueue,
        *,
        secret: str,
        host: str = "127.0.0.1",
        port: int = 8765,
        workers: int = 1,
        max_age: float = 300.0,
    ) -> None:
        self.settings, self.queue, self.secret, self.max_age = settings, queue, secret, max_age
        self.stop = threading.Event()
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.workers = [
            threading.Thread(target=Worker(queue, settings).run, args=(self.stop,), daemon=True)
            for _ in range(max(1, workers))
        ]

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]

    def serve_forever(self) -> None:
        resumed = self.queue.recover()
        if resumed:
            _log.warning("resuming %d audit(s) a previous receiver left unfinished", resumed)
        for thread in self.workers:
            thread.start()
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self.stop.set()
            self.server.server_close()

    def shutdown(self) -> None:
        self.stop.set()
        self.server.shutdown()

    def accept(self, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        """The answer to one delivery: status and JSON body."""
        try:
            delivery = verify(self.secret, headers, body, now=time.time(), max_age=self.max_age)
        except Rejected as exc:
            return exc.status, {"error": exc.reason}
        if delivery.alias is not None and delivery.alias in (
            self.settings.baseline_alias,
            self.settings.assign_alias,
        ):
            # The champion moved, or our own alias was set: nothing new to audit.
            return 200, {"queued": False, "why": f"alias {delivery.alias!r} is not audited"}
        fresh = self.queue.accept(delivery.delivery_id, delivery.name, delivery.version)
        if not fresh:
            return 200, {"queued": False, "why": "delivery already received"}
        return 202, {"queued": True, "model": delivery.name, "version": delivery.version}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.rstrip("/") != "/webhook":
                    self._answer(404, {"error": "POST deliveries to /webhook"})
                    return
                length = self.headers.get("Content-Length", "")
                if not length.isdigit() or int(length) > MAX_BODY:
                    self._answer(
                        400 if not length.isdigit() else 413, {"error": "a body of up to 1 MiB is required"}
                    )
                    return
                body = self.rfile.read(int(length))
                self._answer(*receiver.accept(self.headers, body))

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/") != "/health":
                    self._answer(404, {"error": "GET /health"})
                    return
                self._answer(200, {"jobs": receiver.queue.counts()})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                _log.info("%s %s", self.address_string(), format % args)

        return Handler
