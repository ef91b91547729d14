"""Progress a person can follow: a bar in a terminal, a line every ~10 s in a CI log.

Work is counted in samples x methods, advanced after each method finishes a batch. Where stderr is
no terminal (a CI job's log), a background thread prints one line every ``every`` seconds while the
audit runs, so a long batch never leaves the log silent: the method at work, samples done of the
total, the time spent and the time left at the pace so far.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from tqdm.auto import tqdm

LINE_EVERY_SECONDS = 10.0


class AuditProgress:
    """``mode``: ``"bar"`` (tqdm), ``"lines"`` (periodic lines) or ``"off"``; ``"auto"`` picks a bar
    on a terminal and lines elsewhere."""

    def __init__(
        self,
        samples: int,
        methods: list[str],
        *,
        mode: str = "auto",
        every: float | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "lines"
        if mode not in ("bar", "lines", "off"):
            raise ValueError(f"progress mode must be auto, bar, lines or off, got {mode!r}")
        self.mode, self.every = mode, LINE_EVERY_SECONDS if every is None else every
        self.samples, self.methods = samples, list(methods)
        self.total = samples * len(self.methods)
        self.done = 0
        self.per_method = dict.fromkeys(self.methods, 0)
        self.current = self.methods[0] if self.methods else ""
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> AuditProgress:
        self.started = time.monotonic()
        if self.mode == "bar":
            self._bar = tqdm(total=self.total, desc="attributing", unit="sample", file=self.stream)
        elif self.mode == "lines":
            # The work starts now (start-up, model load and preflight are behind): say so at once.
            print(
                f"mlflow-xai: attributing {self.samples} samples x {len(self.methods)} method(s): "
                f"{', '.join(self.methods)}",
                file=self.stream,
                flush=True,
            )
            self._thread = threading.Thread(target=self._heartbeat, name="mlflow-xai-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if exc[0] is None:
                self._print()  # the last word: all done
        if self._bar is not None:
            self._bar.close()
        return False

    def working_on(self, method: str) -> None:
        with self._lock:
            self.current = method
        if self._bar is not None:
            self._bar.set_postfix_str(method, refresh=False)

    def advance(self, method: str, samples: int) -> None:
        """``samples`` more samples finished by ``method``."""
        with self._lock:
            self.done += samples
            self.per_method[method] = self.per_method.get(method, 0) + samples
        if self._bar is not None:
            self._bar.update(samples)

    def line(self) -> str:
        with self._lock:
            done, method = self.done, self.current
            per_method = self.per_method.get(method, 0)
        elapsed = time.monotonic() - self.started
        if done >= self.total:
            where = f"all {len(self.methods)} method(s) done"
        else:
            index = self.methods.index(method) + 1 if method in self.methods else 0
            where = f"{method} ({index} of {len(self.methods)})"
        eta = _duration(elapsed / done * (self.total - done)) if done else "unknown"
        share = 100.0 * done / self.total if self.total else 100.0
        return (
            f"mlflow-xai: {where}: {done}/{self.total} sample-methods ({share:.0f}%), "
            f"elapsed {_duration(elapsed)}, ETA {eta}"
            + (f" [{per_method}/{self.samples} samples of this method]" if done < self.total else "")
        )

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.every):
            self._print()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
