"""A durable queue of model versions to audit, in one SQLite file.

``deliveries`` remembers every delivery id accepted, so a delivery MLflow retries, or one replayed
within the signature's time window, causes no work. ``jobs`` holds one row per (model, version):
a version is audited once however many deliveries name it. A job is ``pending`` (waiting, maybe
until ``next_try`` after a failure), ``running``, ``done`` or ``error``. A receiver that was killed
leaves jobs ``running``; ``recover`` makes them pending again on restart, and the audit resumes
from its batch cache.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (delivery_id TEXT PRIMARY KEY, received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    run_id TEXT,
    reason TEXT,
    PRIMARY KEY (name, version)
);
"""


@dataclass(frozen=True)
class Job:
    name: str
    version: str
    attempts: int
    run_id: str | None


class JobQueue:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def accept(self, delivery_id: str, name: str, version: str) -> bool:
        """Record a delivery and queue its version; False when the delivery id was seen before."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seen = self._db.execute(
                    "SELECT 1 FROM deliveries WHERE delivery_id = ?", (delivery_id,)
                ).fetchone()
                if seen:
                    self._db.execute("COMMIT")
                    return False
                self._db.execute("INSERT INTO deliveries VALUES (?, ?)", (delivery_id, time.time()))
                self._db.execute(
                    "INSERT OR IGNORE INTO jobs (name, version, state) VALUES (?, ?, 'pending')",
                    (name, version),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return True

    def recover(self) -> int:
        """Jobs a killed receiver left running become pending again; how many."""
        with self._lock:
            cursor = self._db.execute("UPDATE jobs SET state = 'pending' WHERE state = 'running'")
            return cursor.rowcount

    def claim(self, now: float | None = None) -> Job | None:
        """The oldest pending job whose time has come, marked running; None when there is none."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT name, version, attempts, run_id FROM jobs WHERE state = 'pending' AND next_try <= ? "
                "ORDER BY rowid LIMIT 1",
                (now,),
            ).fetchone()
            if row is not None:
                self._db.execute("UPDATE jobs SET state = 'running' WHERE name = ? AND version = ?", row[:2])
            self._db.execute("COMMIT")
        return None if row is None else Job(*row)

    def set_run(self, job: Job, run_id: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET run_id = ? WHERE name = ? AND version = ?", (run_id, job.name, job.version)
            )

    def finish(self, job: Job, reason: str = "") -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = 'done', reason = ? WHERE name = ? AND version = ?",
                (reason, job.name, job.version),
            )

    def fail(
        self, job: Job, reason: str, *, max_attempts: int, backoff: float, now: float | None = None
    ) -> bool:
        """Count a failed attempt: pending again after ``backoff * 2^(attempts - 1)`` seconds, or
        ``error`` once ``max_attempts`` are spent. True when it will be retried."""
        now = time.time() if now is None else now
        attempts = job.attempts + 1
        retry = attempts < max_attempts
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = ?, attempts = ?, next_try = ?, reason = ? "
                "WHERE name = ? AND version = ?",
                (
                    "pending" if retry else "error",
                    attempts,
                    now + backoff * 2 ** (attempts - 1),
                    reason,
                    job.name,
                    job.version,
                ),
            )
        return retry

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: count for state, count in rows}

    def state(self, name: str, version: str) -> tuple[str, int, str | None] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT state, attempts, reason FROM jobs WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2])
