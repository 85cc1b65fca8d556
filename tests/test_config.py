"""config.yaml and the environment: one-line errors naming the key; secrets stay secret."""

from __future__ import annotations

import pytest

from bot.cli import main
from bot.config import ConfigError, load_settings


def write(folder, text):
    path = folder / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(workdir):
    s = load_settings()
    assert s.database_url == f"sqlite:///{workdir / 'hoctap.db'}"
    assert s.timezone == "Asia/Ho_Chi_Minh"
    assert s.telegram.token is None


def test_environment_overrides_the_file(workdir):
    path = write(workdir, "database_url: sqlite:///a.db\ntelegram:\n  token: ${TELEGRAM_BOT_TOKEN}\n")
    s = load_settings(path, {"HOCTAP_DATABASE_URL": "postgresql+psycopg://x@h/db", "TELEGRAM_BOT_TOKEN": "1:abc"})
    assert s.database_url == "postgresql+psycopg://x@h/db"
    assert s.telegram.token == "1:abc"
    assert "1:abc" not in repr(s)


@pytest.mark.parametrize(
    "text, message",
    [
        ("timezone: Asia/Hanoi\n", "config.yaml: timezone: unknown time zone 'Asia/Hanoi' (e.g. Asia/Ho_Chi_Minh)"),
        ("databse_url: x\n", "config.yaml: databse_url: unknown setting (known: content_dir, database_url, language, log_format, scheduler, telegram, timezone, web, zalo, zalo_oa)"),
        ("web:\n  public_url: hoc.example.vn\n", "config.yaml: web.public_url: expected the server's public https URL, e.g. https://bot.example.vn"),
        ("web:\n  secret: abc\n", "config.yaml: web.secret: secrets are read from the environment; write ${VARIABLE} here"),
        ("database_url: hoctap.db\n", "config.yaml: database_url: expected a URL such as sqlite:///hoctap.db"),
        ("telegram:\n  tokn: x\n", "config.yaml: telegram.tokn: unknown setting (known: api_base_url, bot_username, mode, token, webhook_secret)"),
        ("timezone: [a\n", "config.yaml:2: not valid YAML (expected ',' or ']', but got '<stream end>')"),
        ("web:\n  listen: 127.0.0.1:99999\n", "config.yaml: web.listen: expected HOST:PORT (a port 0-65535) such as "
                                               "127.0.0.1:8080, got '127.0.0.1:99999'"),
        ("web:\n  listen: 127.0.0.1:8080\n  metrics_listen: 127.0.0.1:8080\n",
         "config.yaml: web.metrics_listen: expected HOST:PORT (a port 0-65535) other than web.listen, such as "
         "127.0.0.1:9100, got '127.0.0.1:8080'"),
    ],
)
def test_bad_setting_is_one_line_naming_the_key(workdir, text, message):
    with pytest.raises(ConfigError) as info:
        load_settings(write(workdir, text), {})
    assert str(info.value).endswith(message)


def test_a_token_written_into_the_file_is_refused_without_echoing_it(workdir, capsys):
    write(workdir, "telegram:\n  token: 123456:SECRET-TOKEN\n")
    assert main(["--config", "config.yaml", "rounds", "list"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: config.yaml: telegram.token: secrets are read from the environment; write ${VARIABLE} here"
    assert "SECRET" not in err


def test_missing_config_file_given_explicitly_is_an_error(workdir, capsys):
    assert main(["rounds", "list", "--config", "nope.yaml"]) == 2
    assert capsys.readouterr().err.strip() == "error: nope.yaml: configuration file not found"


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("content check", "content load", "units import", "members import", "members list",
                "rounds open", "rounds list", "rounds extend", "rounds close", "run"):
        assert f"hoctap {cmd} " in out


def test_python_dash_m_bot_is_the_hoctap_command(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "bot", "rounds", "list", "--config", "nope.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip()) == (2, "error: nope.yaml: configuration file not found")


@pytest.mark.parametrize("command", ["run", "scheduler", "members list"])
@pytest.mark.parametrize("url, message", [
    ("mysqlish://hoctap:pgPassw0rdSecret@127.0.0.1/hoctap",
     "config.yaml: database_url: unknown kind of database 'mysqlish'; e.g. sqlite:///hoctap.db or "
     "postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE"),
    ("mysql+mysqldb://hoctap:pgPassw0rdSecret@127.0.0.1/hoctap",
     "config.yaml: database_url: the driver of 'mysql+mysqldb' is not installed (MySQLdb); "
     "for PostgreSQL write postgresql+psycopg://..."),
    ("postgresql://hoctap:pgPassw0rdSecret@127.0.0.1:5432:5432/hoctap",
     "config.yaml: database_url: not a database URL SQLAlchemy can use; e.g. sqlite:///hoctap.db or "
     "postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE"),
    ("sqlite://hoctap:pgPassw0rdSecret@/hoctap.db",
     "config.yaml: database_url: not a database URL SQLAlchemy can use; e.g. sqlite:///hoctap.db or "
     "postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE"),
], ids=["unknown-kind", "missing-driver", "malformed-port", "sqlite-with-password"])
def test_an_unusable_database_url_is_refused_at_start_without_repeating_its_password(workdir, capsys, monkeypatch,
                                                                                      command, url, message):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "7000123456:AAE-secret")
    monkeypatch.setenv("HOCTAP_DATABASE_URL", url)
    write(workdir, "telegram:\n  token: ${TELEGRAM_BOT_TOKEN}\n")
    assert main(["--config", "config.yaml", *command.split()]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: {message}"
    assert "pgPassw0rdSecret" not in captured.out + captured.err and "AAE-secret" not in captured.err
