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
from dataclasses import dataclass, replace

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
    (tmp_path / "config.yaml").write_text(f"database_url: sqlite:///{tmp_path / 'hoctap.db'}\n"
                                          f"web:\n  listen: 127.0.0.1:{closed_port()}\n{config}",  # not 8080 in two at once
                                          encoding="utf-8")
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


@dataclass
class Messenger:
    """One messenger's side of a start-up: its token variable, its settings and its refusal line."""

    name: str
    variable: str
    token: str
    wrong_token: str
    rejected: str
    base_url: str = ""
    api_path: str = ""  # what the base URL ends with before the token (Telegram: "/bot")

    def config(self, base_url: str) -> str:
        return f"{self.name.lower()}:\n  token: ${{{self.variable}}}\n  api_base_url: {base_url}\n"


MESSENGERS = {
    "telegram": Messenger("Telegram", "TELEGRAM_BOT_TOKEN", TELEGRAM_TOKEN, "7000999999:AAE-wrongTokenSecret",
                          "error: Telegram rejected the token — check TELEGRAM_BOT_TOKEN and telegram.api_base_url",
                          api_path="/bot"),
    "zalo": Messenger("Zalo", "ZALO_BOT_TOKEN", ZALO_TOKEN, "4400999999:zaloWrongSecret",
                      "error: Zalo rejected the token — check ZALO_BOT_TOKEN and zalo.api_base_url"),
}


@pytest.fixture(params=list(MESSENGERS))
def messenger(request, telegram_api, zalo_api) -> Messenger:
    emulator = telegram_api if request.param == "telegram" else zalo_api
    spec = MESSENGERS[request.param]
    return replace(spec, base_url=emulator.base_url.removesuffix(spec.api_path))


@pytest.mark.parametrize("command", COMMANDS)
def test_a_token_the_messenger_refuses_with_401_is_named_not_printed(tmp_path, messenger, command):
    done = start(tmp_path, command, messenger.config(messenger.base_url + messenger.api_path),
                 {messenger.variable: messenger.wrong_token})
    assert_refused_without_secrets(done, messenger.rejected, messenger.wrong_token)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_wrong_api_address_answering_404_does_not_leak_the_valid_token(tmp_path, messenger, command):
    wrong_address = f"{messenger.base_url}/not-the-api{messenger.api_path}"
    done = start(tmp_path, command, messenger.config(wrong_address), {messenger.variable: messenger.token})
    assert_refused_without_secrets(done, messenger.rejected, messenger.token)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", list(MESSENGERS))
def test_an_unreachable_api_address_is_one_line_without_the_token(tmp_path, name, command):
    m, port = MESSENGERS[name], closed_port()
    done = start(tmp_path, command, m.config(f"http://127.0.0.1:{port}{m.api_path}"), {m.variable: m.token})
    assert_refused_without_secrets(done, f"error: cannot reach {m.name} at 127.0.0.1:{port} …", m.token)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_database_is_one_line_without_the_password_or_the_token(tmp_path, telegram_api, command):
    url = f"postgresql+psycopg://hoctap:{DB_PASSWORD}@127.0.0.1:{closed_port()}/hoctap"
    done = start(tmp_path, command, MESSENGERS["telegram"].config(telegram_api.base_url),
                 {"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN, "HOCTAP_DATABASE_URL": url})
    assert_refused_without_secrets(done, "error: database: …", TELEGRAM_TOKEN, DB_PASSWORD)


BRANCH_TOKEN = "2000000001:branchBotSecretPart"
LATER_TOKEN = "2000000002:addedWhileRunningSecret"
BRANCH_CHILD = f"""
import logging
import os
from urllib.parse import quote

import httpx

from bot.app import start_and_serve
from bot.channels.zalo import TRAITS
from bot.channels.zalo.fleet import ZaloFleet
from bot.config import load_settings
from bot.services.chat import ChatService
from bot.storage.models import ZaloBot
from bot.timeutil import utcnow

settings = load_settings("config.yaml", dict(os.environ))


async def main(db):
    with db.session() as s:  # registered by `hoctap zalo bots add` in another process, after this one started
        s.add(ZaloBot(zalo_id="2000000002", unit_id=2, name="B2", token={LATER_TOKEN!r}, webhook_secret="w" * 20,
                      mode="webhook", created_at=utcnow()))
    async with httpx.AsyncClient() as http:
        fleet = ZaloFleet(db, ChatService(db, TRAITS, settings.tz), http, api_base_url="http://127.0.0.1:9",
                          tz=settings.tz)
        await fleet.bot("2000000002")  # its first update arrives
    for token in ({BRANCH_TOKEN!r}, {LATER_TOKEN!r}):  # as a library would log a Bot API URL
        logging.getLogger("httpx").warning("POST http://zalo/bot%s/sendMessage (%s)", token, quote(token, safe=""))
    raise RuntimeError(f"failed at http://zalo/bot{BRANCH_TOKEN}/getMe and bot{LATER_TOKEN}")


raise SystemExit(start_and_serve(settings, main))
"""


def test_registered_branch_bot_tokens_never_reach_a_log_line_or_a_start_up_failure(tmp_path):
    from bot.storage.db import Database
    from bot.storage.models import Unit, ZaloBot
    from bot.timeutil import utcnow

    (tmp_path / "config.yaml").write_text(f"database_url: sqlite:///{tmp_path / 'hoctap.db'}\n", encoding="utf-8")
    db = Database(f"sqlite:///{tmp_path / 'hoctap.db'}")
    db.upgrade()
    with db.session() as s:
        s.add_all([Unit(code="CB-1", name="Chi bộ 1"), Unit(code="CB-2", name="Chi bộ 2")])
        s.flush()
        s.add(ZaloBot(zalo_id="2000000001", unit_id=1, name="B1", token=BRANCH_TOKEN, webhook_secret="w" * 20,
                      mode="webhook", created_at=utcnow()))
    db.dispose()
    (tmp_path / "child.py").write_text(BRANCH_CHILD, encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if k not in ("TELEGRAM_BOT_TOKEN", "ZALO_BOT_TOKEN")}
    done = subprocess.run([sys.executable, "child.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**clean, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.stderr.count("POST http://zalo/bot<secret>/sendMessage (<secret>)") == 2, done.stderr
    assert_refused_without_secrets(done, "error: the bot stopped: RuntimeError: failed at http://zalo/bot<secret>/getMe "
                                         "and bot<secret>", BRANCH_TOKEN, LATER_TOKEN)


def test_a_web_port_already_taken_is_one_line_naming_the_setting_to_change(tmp_path, telegram_api):
    """A second ``hoctap run`` on one machine with the same ``web.listen``: no traceback, the setting named."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = (f"telegram:\n  token: ${{TELEGRAM_BOT_TOKEN}}\n  api_base_url: "
                  f"{telegram_api.base_url.removesuffix('/bot')}\n")
        (tmp_path / "config.yaml").write_text(f"database_url: sqlite:///{tmp_path / 'hoctap.db'}\n"
                                              f"web:\n  listen: 127.0.0.1:{port}\n{config}", encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "bot.cli", "--config", "config.yaml", "run"], cwd=tmp_path,
                              env={**os.environ, "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN}, capture_output=True,
                              text=True, timeout=60)
    assert_refused_without_secrets(
        done, f"error: the web server cannot listen on 127.0.0.1:{port} (Address already in use) — check web.listen "
              "(HOCTAP_WEB_LISTEN); several processes on one machine each need a port of their own", TELEGRAM_TOKEN)
    assert "Traceback" not in done.stderr


def run_deploy_config(tmp_path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``hoctap run`` with the repository's production configuration (deploy/config.yaml), as a unit file
    whose environment lacks something starts it."""
    from tests.conftest import REPO

    (tmp_path / "config.yaml").write_text((REPO / "deploy" / "config.yaml").read_text(encoding="utf-8"),
                                          encoding="utf-8")
    clean = {k: v for k, v in os.environ.items()
             if k not in ("TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET", "HOCTAP_DATABASE_URL")}
    return subprocess.run([sys.executable, "-m", "bot.cli", "--config", "config.yaml", "run"], cwd=tmp_path,
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_a_database_url_variable_missing_from_the_environment_is_refused_not_replaced_by_a_new_sqlite_file(
        tmp_path):
    done = run_deploy_config(tmp_path, {"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN})
    assert_refused_without_secrets(
        done, "error: config.yaml: database_url: ${HOCTAP_DATABASE_URL} is not set in the environment", TELEGRAM_TOKEN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # no hoctap.db to split members over


def test_a_production_configuration_without_its_token_is_refused_not_served_as_the_playground(tmp_path):
    done = run_deploy_config(tmp_path, {"HOCTAP_DATABASE_URL": f"sqlite:///{tmp_path / 'hoctap.db'}"})
    assert_refused_without_secrets(
        done, "error: neither TELEGRAM_BOT_TOKEN nor ZALO_BOT_TOKEN is set, and this configuration is a deployment "
              "(telegram.mode is webhook, web.public_url is set): set the token; the local playground runs only "
              "without these")
    assert "playground" not in done.stdout and not (tmp_path / "playground.db").exists()
