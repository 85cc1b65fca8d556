"""Settings from config.yaml and the environment.

Secrets come only from the environment (``${TELEGRAM_BOT_TOKEN}`` in the file), so a copied
config.yaml never leaks a token. Every problem is one line naming the key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from bot.domain.languages import is_language_tag

DEFAULT_TELEGRAM_API = "https://api.telegram.org/bot"
DEFAULT_ZALO_API = "https://bot-api.zaloplatforms.com"
_ENV_REF = re.compile(r"^\$\{([A-Z_][A-Z0-9_]*)\}$")
_SECRET_KEYS = {"token", "webhook_secret", "app_secret", "oa_secret_key", "secret"}

#: Environment variables that override settings, as deployments expect.
ENV_OVERRIDES = {
    "HOCTAP_DATABASE_URL": "database_url",
    "HOCTAP_TIMEZONE": "timezone",
    "HOCTAP_CONTENT_DIR": "content_dir",
}  # and HOCTAP_WEB_LISTEN: web.listen


class ConfigError(Exception):
    """A missing or malformed setting; the message names the key."""


@dataclass(frozen=True)
class TelegramSettings:
    """``mode``: long polling (one process only), or ``webhook``: Telegram posts updates to
    ``web.public_url``/telegram/webhook with ``${TELEGRAM_WEBHOOK_SECRET}`` in a header (any number of
    processes behind one reverse proxy)."""

    token: str | None = field(default=None, repr=False)
    api_base_url: str = DEFAULT_TELEGRAM_API
    bot_username: str | None = None
    mode: str = "polling"
    webhook_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class WebSettings:
    """The process's one web server (every webhook, files, /healthz, /metrics, the study pages): it
    listens on ``listen`` behind an HTTPS reverse proxy that the world reaches at ``public_url``.
    ``secret`` (``${HOCTAP_WEB_SECRET}``) signs members' study links: without it no pages are served.
    ``metrics_listen``: where ``/metrics`` is served instead, apart from what the proxy forwards (None: on
    ``listen``, beside everything else)."""

    listen: str = "127.0.0.1:8080"
    public_url: str | None = None
    secret: str | None = field(default=None, repr=False)
    metrics_listen: str | None = None


@dataclass(frozen=True)
class ZaloSettings:
    """The Zalo bot: token from ``${ZALO_BOT_TOKEN}``; long polling, or a webhook at
    ``public_url``/zalo/webhook checked with ``${ZALO_WEBHOOK_SECRET}``. ``public_url`` also lets
    Zalo fetch report charts from this server; ``listen`` is where that server listens (behind an
    HTTPS reverse proxy). ``rate``: outbox messages per second; ``monthly_quota``: the plan's
    outbound messages per month (0: no limit). ``bot_name``: the name the Zalo app shows for the bot
    (``Bot Học Tập``), which members' group @mentions write and getMe does not return."""

    token: str | None = field(default=None, repr=False)
    api_base_url: str = DEFAULT_ZALO_API
    mode: str = "polling"
    webhook_secret: str | None = field(default=None, repr=False)
    public_url: str | None = None
    listen: str = "127.0.0.1:8080"
    rate: float = 2.0
    monthly_quota: int = 3000
    bot_name: str | None = None
    share_link: str | None = None


@dataclass(frozen=True)
class ZaloOASettings:
    """A Zalo Official Account (see ``bot/channels/zalo_oa``): ``app_id`` with ``${ZALO_OA_APP_SECRET}`` and
    ``${ZALO_OA_SECRET_KEY}`` (the OA's key that signs webhook events); events arrive at
    ``public_url``/zalo-oa/webhook on ``listen``. Messages the product starts climb a ladder: free
    consultation (48 h), paid consultation (7 days, ``paid_consultation``), ZNS (``zns_template_id``, for
    ``zns_purposes``, in the last ``zns_last_hours`` before the deadline), else the secretary's call list; ``monthly_budget`` in đồng (0: no limit).
    Prices are UNCONFIRMED (spec): settings."""

    app_id: str | None = None
    app_secret: str | None = field(default=None, repr=False)
    oa_secret_key: str | None = field(default=None, repr=False)
    api_base_url: str = "https://openapi.zalo.me"
    business_api_url: str = "https://business.openapi.zalo.me"
    oauth_url: str = "https://oauth.zaloapp.com"
    public_url: str | None = None
    listen: str = "127.0.0.1:8081"
    rate: float = 5.0
    paid_consultation: bool = False
    paid_price: int = 55
    zns_template_id: str | None = None
    zns_price: int = 300
    zns_purposes: tuple[str, ...] = ("remind", "nudge")
    zns_last_hours: int = 48  # ZNS only this close to the round's deadline (0: any time)
    monthly_budget: int = 0
    signature_max_age: int = 7200

    @property
    def enabled(self) -> bool:
        return bool(self.app_id and self.app_secret and self.oa_secret_key)


@dataclass(frozen=True)
class SchedulerSettings:
    """Local-time schedules: reminders before the deadline, weekly digest, quiet hours, pacing."""

    reminder_days_before: tuple[int, ...] = (3, 1)
    reminder_time: str = "08:00"
    digest_cron: str = "0 16 * * fri"
    quiet_hours: str = "21:00-07:00"
    outbox_rate: float = 25.0
    tick_seconds: float = 15.0


@dataclass(frozen=True)
class Settings:
    database_url: str
    timezone: str = "Asia/Ho_Chi_Minh"
    language: str = "vi"  # what members read by default (a translation where one exists), e.g. km
    content_dir: Path = Path("quizzes")
    telegram: TelegramSettings = TelegramSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    source: str = "defaults"
    zalo: ZaloSettings = ZaloSettings()
    zalo_oa: ZaloOASettings = ZaloOASettings()
    web: WebSettings | None = None  # None: no web section; ``web_server`` falls back to zalo's or zalo_oa's
    log_format: str = "text"  # or json: one JSON object per line, with the update's request id

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def web_server(self) -> WebSettings:
        """Where the one web server listens and is reached: the ``web`` section, else (older
        configurations) ``zalo_oa.listen`` for an OA, ``zalo.listen``, and either's public_url."""
        if self.web is not None:
            return self.web
        listen = self.zalo_oa.listen if self.zalo_oa.enabled and not self.zalo.token else self.zalo.listen
        return WebSettings(listen=listen, public_url=self.zalo.public_url or self.zalo_oa.public_url)


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read ``path`` (default ``./config.yaml``; absent means defaults) and apply the environment."""
    env = dict(os.environ if environ is None else environ)
    explicit = path is not None
    cfg_path = Path(path) if path is not None else Path("config.yaml")
    raw: dict = {}
    if cfg_path.exists():
        try:
            loaded = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{cfg_path}:{mark.line + 1}" if mark else str(cfg_path)
            raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{cfg_path}: the file must be a mapping of settings")
        raw = loaded
    elif explicit:
        raise ConfigError(f"{cfg_path}: configuration file not found")
    src = str(cfg_path)
    base = cfg_path.resolve().parent if cfg_path.exists() else Path.cwd()

    known = {"database_url", "timezone", "language", "content_dir", "telegram", "zalo", "zalo_oa", "scheduler",
             "web", "log_format"}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{src}: {key}: unknown setting (known: {', '.join(sorted(known))})")

    values = {k: _resolve(src, k, v, env) for k, v in raw.items() if k not in ("telegram", "zalo", "zalo_oa", "scheduler", "web")}
    for var, key in ENV_OVERRIDES.items():
        if env.get(var):
            values[key] = env[var]

    written = raw.get("database_url")
    unset = isinstance(written, str) and _ENV_REF.match(written.strip())
    if unset and not values.get("database_url"):  # never a fresh SQLite file beside a production database
        raise ConfigError(f"{src}: database_url: {written.strip()} is not set in the environment")
    db_url = values.get("database_url") or f"sqlite:///{(base / 'hoctap.db')}"
    _require_str(src, "database_url", db_url)
    if "://" not in db_url:
        raise ConfigError(f"{src}: database_url: expected a URL such as sqlite:///hoctap.db")
    _check_database_url(src, db_url)
    tz = values.get("timezone", "Asia/Ho_Chi_Minh")
    _require_str(src, "timezone", tz)
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{src}: timezone: unknown time zone {tz!r} (e.g. Asia/Ho_Chi_Minh)") from None
    language = str(values.get("language", "vi")).strip().casefold()
    if not is_language_tag(language):
        raise ConfigError(f"{src}: language: {language!r} is not a language tag (e.g. vi, km, sti)")
    content_dir = values.get("content_dir", "quizzes")
    _require_str(src, "content_dir", content_dir)
    content_path = Path(content_dir)
    if not content_path.is_absolute():
        content_path = base / content_path

    log_format = values.get("log_format", "text")
    if log_format not in ("text", "json"):
        raise ConfigError(f"{src}: log_format: expected text or json, got {log_format!r}")
    zalo, zalo_oa = _zalo(src, raw.get("zalo"), env), _zalo_oa(src, raw.get("zalo_oa"), env)
    web = _web(src, raw, zalo, zalo_oa, env)
    if env.get("HOCTAP_WEB_LISTEN"):  # one port per process on one host (deploy/systemd/hoctap@.service)
        listen = env["HOCTAP_WEB_LISTEN"]
        if not _LISTEN.match(listen):
            raise ConfigError(f"HOCTAP_WEB_LISTEN: expected HOST:PORT (a port 0-65535) such as 127.0.0.1:8081, "
                              f"got {listen!r}")
        web = replace(web, listen=listen)
    if env.get("HOCTAP_METRICS_LISTEN"):  # beside HOCTAP_WEB_LISTEN: a metrics port per process
        metrics = env["HOCTAP_METRICS_LISTEN"]
        if not _LISTEN.match(metrics) or metrics == web.listen:
            raise ConfigError(f"HOCTAP_METRICS_LISTEN: expected HOST:PORT (a port 0-65535) other than the web "
                              f"server's, such as 127.0.0.1:9101, got {metrics!r}")
        web = replace(web, metrics_listen=metrics)
    telegram = _telegram(src, raw.get("telegram"), env)
    for name, mode in (("telegram", telegram.mode), ("zalo", zalo.mode)):
        if mode == "webhook" and not web.public_url:
            raise ConfigError(f"{src}: web.public_url: {name}.mode webhook needs the server's public https URL")
    return Settings(
        database_url=db_url,
        timezone=tz,
        language=language,
        content_dir=content_path,
        telegram=telegram,
        scheduler=_scheduler(src, raw.get("scheduler")),
        source=src,
        zalo=zalo,
        zalo_oa=zalo_oa,
        web=web,
        log_format=log_format,
    )


_LISTEN = re.compile(r"^(\[[0-9a-fA-F:]+\]|[\w.-]*):(6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|\d{1,4})$")


def _web(src: str, raw: dict, zalo: ZaloSettings, zalo_oa: ZaloOASettings, env: dict[str, str]) -> WebSettings:
    """The ``web`` section; without one, the older ``zalo.listen``/``zalo_oa.listen`` and their public_url,
    which must then agree (one server serves both)."""
    old_listens = {f"{name}.listen": section["listen"] for name in ("zalo", "zalo_oa")
                   if isinstance(section := raw.get(name), dict) and section.get("listen") is not None}
    old_urls = {u for u in (zalo.public_url, zalo_oa.public_url) if u}
    section = raw.get("web")
    if section is None:
        listens = {str(v) for v in old_listens.values()}
        if len(listens) > 1 or len(old_urls) > 1:
            raise ConfigError(f"{src}: zalo.listen and zalo_oa.listen: one web server now serves every webhook; "
                              "write web: {listen: HOST:PORT, public_url: https://...} instead")
        listen = listens.pop() if listens else WebSettings.listen
        return WebSettings(listen=listen, public_url=old_urls.pop() if old_urls else None,
                           secret=_web_secret(src, None, env))
    if not isinstance(section, dict):
        raise ConfigError(f"{src}: web: expected a mapping of settings")
    for key in section:
        if key not in ("listen", "public_url", "secret", "metrics_listen"):
            raise ConfigError(f"{src}: web.{key}: unknown setting (known: listen, metrics_listen, public_url, secret)")
    listen = str(section.get("listen") or WebSettings.listen)
    if not _LISTEN.match(listen):
        raise ConfigError(f"{src}: web.listen: expected HOST:PORT (a port 0-65535) such as 127.0.0.1:8080, "
                          f"got {listen!r}")
    metrics = str(section["metrics_listen"]) if section.get("metrics_listen") else None
    if metrics is not None and (not _LISTEN.match(metrics) or metrics == listen):
        raise ConfigError(f"{src}: web.metrics_listen: expected HOST:PORT (a port 0-65535) other than web.listen, "
                          f"such as 127.0.0.1:9100, got {metrics!r}")
    for key, value in old_listens.items():
        if str(value) != listen:
            raise ConfigError(f"{src}: {key}: the web section's listen now serves every webhook; remove {key}")
    public = section.get("public_url") or None
    if public is not None and (not isinstance(public, str) or not public.startswith(("http://", "https://"))):
        raise ConfigError(f"{src}: web.public_url: expected the server's public https URL, e.g. https://bot.example.vn")
    for url in old_urls:
        if public and url != public:
            raise ConfigError(f"{src}: web.public_url and a zalo public_url differ; keep only web.public_url")
    public = public.rstrip("/") if public else None
    return WebSettings(listen=listen, public_url=public or (old_urls.pop() if old_urls else None),
                       secret=_web_secret(src, section.get("secret"), env), metrics_listen=metrics)


def _web_secret(src: str, raw, env: dict[str, str]) -> str | None:
    """``web.secret`` (written as ``${VAR}``), else ``HOCTAP_WEB_SECRET``: at least 16 characters."""
    secret = _resolve(src, "web.secret", raw, env) or env.get("HOCTAP_WEB_SECRET") or None
    if secret is not None and len(str(secret)) < 16:
        raise ConfigError(f"{src}: web.secret: HOCTAP_WEB_SECRET must be at least 16 characters")
    return secret


def _telegram(src: str, raw, env: dict[str, str]) -> TelegramSettings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: telegram: expected a mapping of settings")
    allowed = {"token", "api_base_url", "bot_username", "mode", "webhook_secret"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{src}: telegram.{key}: unknown setting (known: {', '.join(sorted(allowed))})")
    vals = {k: _resolve(src, f"telegram.{k}", v, env) for k, v in raw.items()}
    token = vals.get("token") or env.get("TELEGRAM_BOT_TOKEN") or None
    url = vals.get("api_base_url") or DEFAULT_TELEGRAM_API
    _require_str(src, "telegram.api_base_url", url)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{src}: telegram.api_base_url: expected an http(s) URL")
    mode = vals.get("mode") or "polling"
    if mode not in ("polling", "webhook"):
        raise ConfigError(f"{src}: telegram.mode: expected polling or webhook, got {mode!r}")
    secret = vals.get("webhook_secret") or env.get("TELEGRAM_WEBHOOK_SECRET") or None
    return TelegramSettings(token=token, api_base_url=url, bot_username=vals.get("bot_username"), mode=mode,
                            webhook_secret=secret)


def _zalo(src: str, raw, env: dict[str, str]) -> ZaloSettings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: zalo: expected a mapping of settings")
    defaults = ZaloSettings()
    allowed = {"token", "api_base_url", "mode", "webhook_secret", "public_url", "listen", "rate", "monthly_quota",
               "bot_name", "share_link"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{src}: zalo.{key}: unknown setting (known: {', '.join(sorted(allowed))})")
    vals = {k: _resolve(src, f"zalo.{k}", v, env) for k, v in raw.items()}
    token = vals.get("token") or env.get("ZALO_BOT_TOKEN") or None
    secret = vals.get("webhook_secret") or env.get("ZALO_WEBHOOK_SECRET") or None
    url = vals.get("api_base_url") or DEFAULT_ZALO_API
    _require_str(src, "zalo.api_base_url", url)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{src}: zalo.api_base_url: expected an http(s) URL")
    mode = vals.get("mode") or "polling"
    if mode not in ("polling", "webhook"):
        raise ConfigError(f"{src}: zalo.mode: expected polling or webhook, got {mode!r}")
    public = vals.get("public_url") or None
    if public is not None and (not isinstance(public, str) or not public.startswith(("http://", "https://"))):
        raise ConfigError(f"{src}: zalo.public_url: expected the server's public https URL, e.g. https://bot.example.vn")
    listen = str(vals.get("listen") or defaults.listen)
    if not re.match(r"^(\[[0-9a-fA-F:]+\]|[\w.-]*):\d{1,5}$", listen):
        raise ConfigError(f"{src}: zalo.listen: expected HOST:PORT such as 127.0.0.1:8080, got {listen!r}")
    rate = vals.get("rate", defaults.rate)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 100:
        raise ConfigError(f"{src}: zalo.rate: expected messages per second, more than 0 and at most 100")
    quota = vals.get("monthly_quota", defaults.monthly_quota)
    if quota is None:
        quota = 0
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 0:
        raise ConfigError(f"{src}: zalo.monthly_quota: expected a whole number of messages (0: no limit)")
    for key in ("bot_name", "share_link"):
        if vals.get(key) is not None and not isinstance(vals[key], str):
            raise ConfigError(f"{src}: zalo.{key}: expected text")
    return ZaloSettings(token=token, api_base_url=url, mode=mode, webhook_secret=secret, public_url=public,
                        listen=listen, rate=float(rate), monthly_quota=quota,
                        bot_name=(vals.get("bot_name") or "").lstrip("@") or None,
                        share_link=vals.get("share_link") or None)


def _zalo_oa(src: str, raw, env: dict[str, str]) -> ZaloOASettings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: zalo_oa: expected a mapping of settings")
    defaults = ZaloOASettings()
    allowed = set(ZaloOASettings.__dataclass_fields__)
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{src}: zalo_oa.{key}: unknown setting (known: {', '.join(sorted(allowed))})")
    vals = {k: _resolve(src, f"zalo_oa.{k}", v, env) for k, v in raw.items()}
    vals["app_secret"] = vals.get("app_secret") or env.get("ZALO_OA_APP_SECRET") or None
    vals["oa_secret_key"] = vals.get("oa_secret_key") or env.get("ZALO_OA_SECRET_KEY") or None
    for key in ("app_id", "zns_template_id"):
        if vals.get(key) is not None:
            vals[key] = str(vals[key]) or None
    for key in ("api_base_url", "business_api_url", "oauth_url", "public_url"):
        value = vals.get(key)
        if value is not None and (not isinstance(value, str) or not value.startswith(("http://", "https://"))):
            raise ConfigError(f"{src}: zalo_oa.{key}: expected an http(s) URL")
    for key in ("paid_price", "zns_price", "zns_last_hours", "monthly_budget", "signature_max_age"):
        value = vals.get(key, getattr(defaults, key))
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{src}: zalo_oa.{key}: expected a whole number of at least 0")
    if not isinstance(vals.get("paid_consultation", False), bool):
        raise ConfigError(f"{src}: zalo_oa.paid_consultation: expected true or false")
    rate = vals.get("rate", defaults.rate)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 100:
        raise ConfigError(f"{src}: zalo_oa.rate: expected messages per second, more than 0 and at most 100")
    vals["rate"] = float(rate)
    purposes = vals.get("zns_purposes", list(defaults.zns_purposes))
    if not isinstance(purposes, list) or not all(isinstance(p, str) for p in purposes):
        raise ConfigError(f"{src}: zalo_oa.zns_purposes: expected a list such as [remind, nudge]")
    vals["zns_purposes"] = tuple(purposes)
    listen = str(vals.get("listen") or defaults.listen)
    if not re.match(r"^(\[[0-9a-fA-F:]+\]|[\w.-]*):\d{1,5}$", listen):
        raise ConfigError(f"{src}: zalo_oa.listen: expected HOST:PORT such as 127.0.0.1:8081, got {listen!r}")
    vals["listen"] = listen
    return ZaloOASettings(**{k: v for k, v in vals.items() if v is not None or k in ("app_secret", "oa_secret_key")})


def _scheduler(src: str, raw) -> SchedulerSettings:
    if raw is None:
        return SchedulerSettings()
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: scheduler: expected a mapping of settings")
    defaults = SchedulerSettings()
    allowed = {"reminder_days_before", "reminder_time", "digest_cron", "quiet_hours", "outbox_rate", "tick_seconds"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{src}: scheduler.{key}: unknown setting (known: {', '.join(sorted(allowed))})")
    days = raw.get("reminder_days_before", list(defaults.reminder_days_before))
    if not isinstance(days, list) or not all(isinstance(d, int) and d >= 0 for d in days):
        raise ConfigError(f"{src}: scheduler.reminder_days_before: expected a list of whole days, e.g. [3, 1]")
    at = str(raw.get("reminder_time", defaults.reminder_time))
    if not _HHMM.match(at):
        raise ConfigError(f"{src}: scheduler.reminder_time: expected HH:MM, got {at!r}")
    quiet = str(raw.get("quiet_hours", defaults.quiet_hours))
    parts = quiet.split("-")
    if len(parts) != 2 or not all(_HHMM.match(p.strip()) for p in parts):
        raise ConfigError(f"{src}: scheduler.quiet_hours: expected HH:MM-HH:MM such as 21:00-07:00, got {quiet!r}")
    cron = str(raw.get("digest_cron", defaults.digest_cron))
    try:
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger.from_crontab(cron)
    except ValueError as exc:
        raise ConfigError(f"{src}: scheduler.digest_cron: {exc} (e.g. '0 16 * * fri')") from None
    rate = raw.get("outbox_rate", defaults.outbox_rate)
    if not isinstance(rate, (int, float)) or not 0 < rate <= 1000:
        raise ConfigError(f"{src}: scheduler.outbox_rate: expected messages per second between 1 and 1000")
    tick = raw.get("tick_seconds", defaults.tick_seconds)
    if not isinstance(tick, (int, float)) or not 0 < tick <= 3600:
        raise ConfigError(f"{src}: scheduler.tick_seconds: expected seconds between ticks, e.g. 15")
    return SchedulerSettings(tuple(days), at, cron, quiet, float(rate), float(tick))


_HHMM = re.compile(r"^([01]?\d|2[0-3]):[0-5]\d$")


def _resolve(src: str, key: str, value, env: dict[str, str]):
    """Expand ``${VAR}``; refuse literal secrets so they never sit in the file."""
    leaf = key.rsplit(".", 1)[-1]
    if isinstance(value, str):
        match = _ENV_REF.match(value.strip())
        if match:
            return env.get(match.group(1)) or None
        if leaf in _SECRET_KEYS and value:
            raise ConfigError(
                f"{src}: {key}: secrets are read from the environment; write ${{VARIABLE}} here"
            )
    return value


def _check_database_url(src: str, url: str) -> None:
    """Refuse a URL SQLAlchemy cannot use (no connection is made), in words that never repeat the URL:
    it may hold a password."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    example = "e.g. sqlite:///hoctap.db or postgresql+psycopg://USER:PASSWORD@HOST:5432/DATABASE"
    try:
        parsed = make_url(url)
        create_engine(parsed).dispose()
    except NoSuchModuleError:
        raise ConfigError(f"{src}: database_url: unknown kind of database '{parsed.drivername}'; {example}") from None
    except ImportError as exc:
        raise ConfigError(f"{src}: database_url: the driver of '{parsed.drivername}' is not installed "
                          f"({exc.name}); for PostgreSQL write postgresql+psycopg://...") from None
    except (ArgumentError, ValueError, TypeError):
        raise ConfigError(f"{src}: database_url: not a database URL SQLAlchemy can use; {example}") from None


def _require_str(src: str, key: str, value) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{src}: {key}: expected text, got {value!r}")
