"""Benchmarks print the same figures whatever the hour they are run at (quiet hours hold the outbox)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_broadcast_benchmark_sends_everything_when_run_at_night():
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOCTAP_")}
    result = subprocess.run(
        [sys.executable, "-m", "bench.broadcast", "--members", "60", "--rate", "500", "--baseline", "10",
         "--wall-clock", "2026-12-01 23:30"],  # in quiet hours by the machine's clock
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = {line[:34].strip(): line[34:].split() for line in result.stdout.splitlines()}
    assert lines["sent / failed / retried"] == ["60", "/", "0", "/", "0"], result.stdout
    assert lines["duplicates / lost"] == ["0", "/", "0"], result.stdout
    assert "clock: pinned to 09:00 01/12/2026" in result.stdout
