"""`hoctap run` and `hoctap scheduler` that cannot start: one line naming what to check, exit status 2,
and no secret (token, database password) anywhere in what the process prints or logs.

Each case is a separate process, as an operator starts it, against the Bot API emulators: a wrong token
(401), a wrong API address on a live server (404, the token being valid), and an address nobody answers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from bot.emulators.telegram import TelegramEmulator
from bot.emulators.zalo import ZaloEmulator

COMMANDS = ["run", "scheduler"]
TELEGRAM_TOKEN = "7000123456:AAE-telegramSecretPart"
ZALO_TOKEN = "4400123456:zaloSecretPart-xyz"
DB_PASSWORD = "pgPassw0rdSecret"


@pytest.fixture(scope="module")
def telegram_api():
    with TelegramEmulator(token=TELEGRAM_TOKEN) as emu:
        yield emu


@pytest.fixture(scope="module")
def zalo_api():
    with ZaloEmulator(ZALO_TOKEN) as emu:
        yield emu


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp_path, command: str, config: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    (tmp_path / "config.yaml").write_text(f"database_url: sqlite:///{tmp_path / 'hoctap.db'}\n{config}", encoding="utf-8")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("TELEGRAM_BOT_TOKEN", "ZALO_BOT_TOKEN", "ZALO_WEBHOOK_SECRET", "HOCTAP_DATABASE_URL")}
    return subprocess.run([sys.executable, "-m", "bot.cli", "--config", "config.yaml", command], cwd=tmp_path,
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


def assert_refused_without_secrets(done: subprocess.CompletedProcess, line: str, *secrets: str) -> None:
    output = done.stdout + done.stderr
    for secret in secrets:
        assert secret not in output
        assert secret.split(":")[-1] not in output
    last = done.stderr.splitlines()[-1]  # log lines may come before it, each redacted; no traceback escapes
    assert last == line or (line.endswith("…") and last.startswith(line[:-1])), output
    assert sum(text.startswith("error:") for text in done.stderr.splitlines()) == 1
    assert done.returncode == 2


def telegram_config(base_url: str) -> str:
    return f"telegram:\n  token: ${{TELEGRAM_BOT_TOKEN}}\n  api_base_url: {base_url}\n"


def zalo_config(base_url: str) -> str:
    return f"zalo:\n  token: ${{ZALO_BOT_TOKEN}}\n  api_base_url: {base_url}\n"


TELEGRAM_REJECTED = "error: Telegram rejected the token — check TELEGRAM_BOT_TOKEN and telegram.api_base_url"
ZALO_REJECTED = "error: Zalo rejected the token — check ZALO_BOT_TOKEN and zalo.api_base_url"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_token_telegram_refuses_with_401_is_named_not_printed(tmp_path, telegram_api, command):
    wrong = "7000999999:AAE-wrongTokenSecret"
    done = start(tmp_path, command, telegram_config(telegram_api.base_url), {"TELEGRAM_BOT_TOKEN": wrong})
    assert_refused_without_secrets(done, TELEGRAM_REJECTED, wrong)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_wrong_telegram_address_answering_404_does_not_leak_the_valid_token(tmp_path, telegram_api, command):
    wrong_path = telegram_api.base_url.replace("/bot", "/not-the-api/bot")
    done = start(tmp_path, command, telegram_config(wrong_path), {"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN})
    assert_refused_without_secrets(done, TELEGRAM_REJECTED, TELEGRAM_TOKEN)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_telegram_address_is_one_line_without_the_token(tmp_path, command):
    port = closed_port()
    done = start(tmp_path, command, telegram_config(f"http://127.0.0.1:{port}/bot"),
                 {"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN})
    assert_refused_without_secrets(done, f"error: cannot reach Telegram at 127.0.0.1:{port} …", TELEGRAM_TOKEN)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_token_zalo_refuses_with_401_is_named_not_printed(tmp_path, zalo_api, command):
    wrong = "4400999999:zaloWrongSecret"
    done = start(tmp_path, command, zalo_config(zalo_api.base_url), {"ZALO_BOT_TOKEN": wrong})
    assert_refused_without_secrets(done, ZALO_REJECTED, wrong)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_wrong_zalo_address_answering_404_does_not_leak_the_valid_token(tmp_path, zalo_api, command):
    done = start(tmp_path, command, zalo_config(zalo_api.base_url + "/not-the-api"), {"ZALO_BOT_TOKEN": ZALO_TOKEN})
    assert_refused_without_secrets(done, ZALO_REJECTED, ZALO_TOKEN)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_zalo_address_is_one_line_without_the_token(tmp_path, command):
    port = closed_port()
    done = start(tmp_path, command, zalo_config(f"http://127.0.0.1:{port}"), {"ZALO_BOT_TOKEN": ZALO_TOKEN})
    assert_refused_without_secrets(done, f"error: cannot reach Zalo at 127.0.0.1:{port} …", ZALO_TOKEN)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_database_is_one_line_without_the_password_or_the_token(tmp_path, telegram_api, command):
    url = f"postgresql+psycopg://hoctap:{DB_PASSWORD}@127.0.0.1:{closed_port()}/hoctap"
    done = start(tmp_path, command, telegram_config(telegram_api.base_url),
                 {"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN, "HOCTAP_DATABASE_URL": url})
    assert_refused_without_secrets(done, "error: database: …", TELEGRAM_TOKEN, DB_PASSWORD)
