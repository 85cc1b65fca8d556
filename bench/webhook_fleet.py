"""N real ``hoctap run`` processes in Telegram webhook mode on one database, behind the emulator's
webhook delivery (which stands for the TLS reverse proxy: round-robin over the processes).

Used by ``bench/scale_out.py`` and ``tests/test_scale_out.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bot.emulators.common import free_port

SECRET = "fleet-webhook-secret"
PUBLIC_URL = "https://bot.example.vn"


def wait_healthy(port: int, process: subprocess.Popen, deadline: float, failure) -> None:
    """Until the ``hoctap run`` on ``port`` answers /healthz; ``failure()`` says why it did not (it stopped,
    or ``deadline``, a ``time.monotonic()``, passed)."""
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(failure())
        time.sleep(0.1)


class Fleet:
    """``ports`` are chosen up front so the emulator can be told its targets before the processes start."""

    def __init__(self, workdir: Path, database_url: str, size: int, outbox_rate: float = 25.0):
        self.workdir, self.database_url, self.outbox_rate = Path(workdir), database_url, outbox_rate
        self.ports = [free_port() for _ in range(size)]
        self.processes: list[subprocess.Popen | None] = [None] * size

    @property
    def targets(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def start(self, emulator, timeout: float = 60) -> Fleet:
        env = {**os.environ, "TELEGRAM_BOT_TOKEN": emulator.token, "TELEGRAM_WEBHOOK_SECRET": SECRET}
        env.pop("HOCTAP_DATABASE_URL", None)
        for i, port in enumerate(self.ports):
            config = self.workdir / f"fleet-{i}.yaml"
            config.write_text(
                f"database_url: {self.database_url}\n"
                f"telegram:\n  token: ${{TELEGRAM_BOT_TOKEN}}\n  api_base_url: {emulator.base_url}\n  mode: webhook\n"
                f"web:\n  listen: 127.0.0.1:{port}\n  public_url: {PUBLIC_URL}\n"
                "scheduler:\n  quiet_hours: \"00:00-00:00\"\n  tick_seconds: 3600\n"
                f"  outbox_rate: {self.outbox_rate}\n", encoding="utf-8")
            log = open(self.workdir / f"fleet-{i}.log", "wb")
            self.processes[i] = subprocess.Popen([sys.executable, "-m", "bot.cli", "--config", str(config), "run"],
                                                 cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        for i, port in enumerate(self.ports):
            wait_healthy(port, self.processes[i], deadline, lambda i=i: f"process {i} did not start: {self.log(i)[-2000:]}")
        deadline = time.monotonic() + timeout  # every process has set the webhook before traffic
        while len(emulator.calls("setWebhook")) < len(self.ports) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def log(self, i: int) -> str:
        return (self.workdir / f"fleet-{i}.log").read_text(encoding="utf-8", errors="replace")

    def kill(self, i: int) -> None:
        """kill -9: no goodbye, whatever was in flight is cut off."""
        process = self.processes[i]
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            if process is not None:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
