"""Progress a person can follow, in a terminal and in a CI log."""

from __future__ import annotations

import io
import threading

from mlflow_xai.config import load_config
from mlflow_xai.engine import audit_prepared, prepare_probe
from mlflow_xai.engine.progress import AuditProgress


class Log(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_lines_count_samples_times_methods_and_say_the_method_and_eta():
    log = Log()
    with AuditProgress(64, ["integrated_gradients", "occlusion"], mode="auto", every=3600, stream=log) as p:
        assert p.mode == "lines"  # no terminal: lines, not a bar
        p.working_on("integrated_gradients")
        p.advance("integrated_gradients", 32)
        line = p.line()
        assert line.startswith("mlflow-xai: integrated_gradients (1 of 2): 32/128 sample-methods (25%)")
        assert "[32/64 samples of this method]" in line and "ETA " in line and "ETA unknown" not in line
        p.working_on("occlusion")
        p.advance("occlusion", 32)
        assert "occlusion (2 of 2): 64/128 sample-methods (50%)" in p.line()
        p.advance("integrated_gradients", 32)
        p.advance("occlusion", 32)
    assert log.getvalue().strip().splitlines()[-1].startswith(
        "mlflow-xai: all 2 method(s) done: 128/128 sample-methods (100%)"
    )


def test_a_long_batch_still_prints_a_line_every_few_seconds(small_cnn, shapes16, monkeypatch):
    # One slow batch: the heartbeat speaks while it runs, not only when it ends.
    import mlflow_xai.engine.progress as progress_module

    _, probe = shapes16
    log = Log()
    monkeypatch.setattr(progress_module.sys, "stderr", log)
    monkeypatch.setattr(progress_module, "LINE_EVERY_SECONDS", 0.05)
    spoke = threading.Event()
    from mlflow_xai.engine import BatchAttributor

    original = BatchAttributor.run

    def slow_run(self, *args, **kwargs):
        assert spoke.wait(10), "no progress line while a batch ran"
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BatchAttributor, "run", slow_run)
    watcher = threading.Thread(target=lambda: _wait_for_line(log, spoke), daemon=True)
    watcher.start()
    cfg = load_config({"methods": {"saliency": {}}, "artifacts": {"sheet_samples": 0}})
    report = audit_prepared(small_cnn, prepare_probe(probe.images[:4], cfg), cfg, progress=None)
    assert len(report.probe) == 4
    lines = log.getvalue().strip().splitlines()
    assert lines[0] == "mlflow-xai: attributing 4 samples x 1 method(s): saliency"
    assert lines[1].startswith("mlflow-xai: saliency (1 of 1): 0/4 sample-methods (0%)")
    assert lines[-1].startswith("mlflow-xai: all 1 method(s) done: 4/4")


def _wait_for_line(log: Log, spoke: threading.Event) -> None:
    import time

    for _ in range(1000):
        if "sample-methods" in log.getvalue():  # a heartbeat line, not the opening one
            spoke.set()
            return
        time.sleep(0.01)


def test_no_progress_from_the_library_by_default(small_cnn, shapes16, capsys):
    from mlflow_xai import audit

    _, probe = shapes16
    audit(small_cnn, probe.images[:2], {"methods": {"saliency": {}}, "artifacts": {"sheet_samples": 0}})
    assert capsys.readouterr().err == ""
