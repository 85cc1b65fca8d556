"""The deploy recipe: its settings load, and a backup made with deploy/backup.sh restores with deploy/restore.sh."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from bot.config import load_settings
from bot.storage.db import Database
from bot.storage.models import Member, OutboxMessage, Round

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def pg_tools_path() -> str:
    """PATH with PostgreSQL's client tools, found as scripts/test finds the server."""
    found = shutil.which("pg_dump")
    if found:
        return os.environ["PATH"]
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not bins:
        pytest.fail("pg_dump not found (install Debian's postgresql-client)")
    return f"{bins[-1]}:{os.environ['PATH']}"


def libpq(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    return (parsed.set(database=database) if database else parsed).render_as_string(hide_password=False)


def test_the_deploy_settings_load_with_one_port_per_process_and_metrics_apart_from_the_proxied_port():
    unit = (DEPLOY / "systemd" / "hoctap@.service").read_text(encoding="utf-8").replace("%i", "8082")
    from_unit = dict(line.removeprefix("Environment=").split("=", 1) for line in unit.splitlines()
                     if line.startswith("Environment="))  # what systemd sets for hoctap@8082
    env = {"HOCTAP_DATABASE_URL": "postgresql+psycopg://hoctap:pw@db:5432/hoctap", "TELEGRAM_BOT_TOKEN": "1:abc",
           "TELEGRAM_WEBHOOK_SECRET": "s3cret", **from_unit}
    settings = load_settings(DEPLOY / "config.yaml", env)
    assert settings.telegram.mode == "webhook" and settings.telegram.webhook_secret == "s3cret"
    assert settings.web_server.listen == "127.0.0.1:8082" and settings.web_server.public_url.startswith("https://")
    assert settings.web_server.metrics_listen == "127.0.0.1:18082"  # a port per process, never the proxied one
    compose = load_settings(DEPLOY / "config.yaml", {k: v for k, v in env.items() if "LISTEN" not in k})
    assert compose.web_server.metrics_listen == "0.0.0.0:9090" and compose.web_server.listen == "0.0.0.0:8080"
    assert settings.log_format == "json" and settings.database_url == env["HOCTAP_DATABASE_URL"]


@pytest.mark.postgres
def test_a_backup_restores_into_an_empty_database_with_everything_in_it(province, db_url, tmp_path):
    env = {**os.environ, "PATH": pg_tools_path()}
    with province.session() as s:
        before = (s.scalar(select(func.count()).select_from(Member)), s.scalar(select(Round.closes_at)))
    dump = tmp_path / "hoctap.dump"
    # HOCTAP_DATABASE_URL as the operator copies it (postgresql+psycopg://...)
    subprocess.run([DEPLOY / "backup.sh", db_url, dump], env=env, check=True, capture_output=True)
    assert dump.stat().st_size > 0
    target = make_url(db_url).database + "_restored"
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{target}"'))
    admin.dispose()
    subprocess.run([DEPLOY / "restore.sh", libpq(db_url, target), dump], env=env, check=True, capture_output=True)
    restored = Database(make_url(db_url).set(database=target).render_as_string(hide_password=False))
    try:
        restored.upgrade()  # as the runbook says: `hoctap db upgrade` after a restore (here: nothing to do)
        with restored.session() as s:
            after = (s.scalar(select(func.count()).select_from(Member)), s.scalar(select(Round.closes_at)))
            s.scalar(select(func.count()).select_from(OutboxMessage))
        assert after == before and before[0] > 0
    finally:
        restored.dispose()
    # restoring again over the data (--clean) replaces it rather than failing on what is there
    again = make_url(db_url).set(database=target).render_as_string(hide_password=False)
    subprocess.run([DEPLOY / "restore.sh", again, dump], env=env, check=True, capture_output=True)


def test_an_installed_package_carries_every_template_and_static_file():
    """The Docker image installs the package (not the source tree): a page template or stylesheet left out of
    pyproject's package-data would be missing there and nowhere else."""
    import tomllib

    root = Path(__file__).resolve().parent.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"]["bot"]
    packaged = {Path(p) for pattern in patterns for p in glob.glob(str(root / "bot" / pattern), recursive=True)}
    data_files = {p for p in (root / "bot").rglob("*")
                  if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert {p.relative_to(root).as_posix() for p in data_files - packaged} == set()
    assert any(p.match("webapp/templates/*.html") for p in packaged)
