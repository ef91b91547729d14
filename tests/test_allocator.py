"""glibc thresholds: once raised, repeated large blocks are reused instead of faulting in anew."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_xai.cli import allocator
from mlflow_xai.cli import commands as cli

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Allocate, touch and free a 64 MiB block 20 times; print the minor page faults it cost, before and
# after keep_freed_memory(). A fresh process, so that no earlier test has set the thresholds.
_PROBE = """
import resource, torch
from mlflow_xai.allocator import keep_freed_memory

def faults():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.empty(16 << 20, dtype=torch.float32).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

before = faults()
kept = keep_freed_memory()
faults()  # the first block after the change still has to come in once
print(before, kept, faults())
"""


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_raised_thresholds_stop_page_faults_on_repeated_large_blocks() -> None:
    env = {k: v for k, v in os.environ.items() if k not in allocator.ENVIRONMENT}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    before, kept, after = int(out[0]), out[1], int(out[2])
    assert kept == "True"
    pages = 20 * (64 << 20) // 4096  # every page of every block, were each one a fresh mapping
    assert before > pages // 2, f"the default allocator did not fault the blocks in ({before} faults)"
    assert after < pages // 20, f"blocks still fault in after keep_freed_memory ({after} faults)"


def test_thresholds_set_in_the_environment_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert allocator.keep_freed_memory() is False


def test_the_command_line_keeps_freed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True) or True)
    config = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    assert cli.main(["validate-config", str(config)]) == 0
    assert calls == [True]
