"""The one place that reads the environment (twelve-factor configuration)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from notifier import vapid
from notifier.errors import ConfigurationError
from notifier.proxies import TrustedProxies

Number = TypeVar("Number", int, float)
MIN_SECRET_LENGTH = 32
DEVELOPMENT_VAPID_SUBJECT = "mailto:notifier@localhost"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, read once at start."""

    env: str
    port: int
    mongodb_uri: str
    redis_url: str
    redis_cluster_url: str | None
    jwt_secret: str
    smtp_url: str | None
    email_from: str
    email_ack_wait: float
    broker_visibility_timeout: int
    base_url: str
    deal_check_interval: float
    deal_check_chunk_users: int
    price_history_days: int
    price_window_days: int
    demo_password: str
    demo_feed_interval: float
    ws_ping_interval: float
    ws_stall_seconds: float
    token_ttl: int
    connections_per_user: int
    allowed_origins: tuple[str, ...]
    login_attempts_per_account: int
    login_attempts_per_address: int
    trusted_proxies: TrustedProxies
    header_timeout: float
    idle_timeout: float
    connections_per_address: int
    metrics_token: str | None
    worker_metrics_port: int
    worker_metrics_addr: str
    var_dir: Path
    web_concurrency: int = 1
    replay_limit: int = 500
    alert_memory_days: int = 7  # a deal without a target must beat what was told in this long
    email_min_interval: float = 1800.0  # seconds between two deal emails to one user
    ws_transport: str = "auto"  # auto, fast or stock: see web/transport.py
    # prometheus-client's multiprocess directory, set when WEB_CONCURRENCY > 1 (web/serve.py)
    metrics_dir: str | None = None
    # Web Push (notifier/push): off (None) only in production without VAPID keys.
    push_ack_wait: float = 10.0
    vapid_private_key: str | None = None
    vapid_subject: str = DEVELOPMENT_VAPID_SUBJECT

    @property
    def push_enabled(self) -> bool:
        """Whether Web Push is on (always in development; with VAPID keys in production)."""
        return self.vapid_private_key is not None

    @property
    def production(self) -> bool:
        """True when NOTIFIER_ENV is production."""
        return self.env == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from the environment; raise ConfigurationError when unusable."""
        env = dict(os.environ if environ is None else environ)
        mode = env.get("NOTIFIER_ENV", "development")
        if mode not in ("development", "production"):
            raise ConfigurationError(
                f"NOTIFIER_ENV must be development or production, not {mode!r}"
            )
        var_dir = Path(env.get("VAR_DIR", "var")).resolve()
        if mode == "production":
            missing = [k for k in ("JWT_SECRET", "MONGODB_URI", "REDIS_URL") if not env.get(k)]
            if missing:
                raise ConfigurationError(
                    "production needs these environment variables: " + ", ".join(missing)
                )
            if len(env["JWT_SECRET"]) < MIN_SECRET_LENGTH:
                raise ConfigurationError(
                    f"JWT_SECRET must be at least {MIN_SECRET_LENGTH} characters in production"
                )
        port = _number(env, "PORT", "8888", int)
        vapid_key, vapid_subject = _vapid(env, mode, var_dir)
        history_days = max(1, _number(env, "PRICE_HISTORY_DAYS", "180", int))
        return cls(
            env=mode,
            port=port,
            mongodb_uri=env.get("MONGODB_URI") or "mongodb://127.0.0.1:27017/notifier",
            redis_url=env.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
            redis_cluster_url=env.get("REDIS_CLUSTER_URL") or None,
            jwt_secret=env.get("JWT_SECRET") or _development_secret(var_dir),
            smtp_url=env.get("SMTP_URL") or None,
            email_from=env.get("EMAIL_FROM") or "notifier <notifier@localhost>",
            email_ack_wait=_number(env, "EMAIL_ACK_WAIT", "60", float),
            email_min_interval=max(0.0, _number(env, "EMAIL_MIN_INTERVAL", "1800", float)),
            alert_memory_days=max(0, _number(env, "ALERT_MEMORY_DAYS", "7", int)),
            broker_visibility_timeout=_number(env, "BROKER_VISIBILITY_TIMEOUT", "3600", int),
            base_url=(env.get("BASE_URL") or f"http://localhost:{port}").rstrip("/"),
            deal_check_interval=_number(
                env, "DEAL_CHECK_INTERVAL", "60" if mode == "production" else "10", float
            ),
            deal_check_chunk_users=max(1, _number(env, "DEAL_CHECK_CHUNK_USERS", "1000", int)),
            price_history_days=history_days,
            # One window for every price figure a shopper reads: charts, sparklines, the
            # "N-day low" and the headlines' "lowest in N days" (at most what is kept).
            price_window_days=min(
                history_days, max(1, _number(env, "PRICE_WINDOW_DAYS", "90", int))
            ),
            demo_password=env.get("DEMO_PASSWORD") or "demo",
            demo_feed_interval=_number(env, "DEMO_FEED_INTERVAL", "0", float),
            ws_ping_interval=_number(env, "WS_PING_INTERVAL", "30", float),
            ws_stall_seconds=_number(env, "WS_STALL_SECONDS", "10", float),
            token_ttl=_number(env, "TOKEN_TTL", "43200", int),
            connections_per_user=max(1, _number(env, "CONNECTIONS_PER_USER", "20", int)),
            login_attempts_per_account=_number(env, "LOGIN_ATTEMPTS_PER_ACCOUNT", "10", int),
            login_attempts_per_address=_number(env, "LOGIN_ATTEMPTS_PER_ADDRESS", "100", int),
            allowed_origins=tuple(
                o.strip().rstrip("/")
                for o in env.get("ALLOWED_ORIGINS", "").split(",")
                if o.strip()
            ),
            trusted_proxies=TrustedProxies.parse(env.get("TRUSTED_PROXIES", "")),
            header_timeout=_number(env, "HEADER_TIMEOUT", "10", float) or 10.0,
            idle_timeout=_number(env, "IDLE_TIMEOUT", "60", float) or 60.0,
            connections_per_address=_number(env, "CONNECTIONS_PER_ADDRESS", "256", int),
            metrics_token=env.get("METRICS_TOKEN") or None,
            worker_metrics_port=_number(env, "WORKER_METRICS_PORT", "0", int),
            worker_metrics_addr=env.get("WORKER_METRICS_ADDR") or "127.0.0.1",
            var_dir=var_dir,
            web_concurrency=max(1, _number(env, "WEB_CONCURRENCY", "1", int)),
            replay_limit=max(1, _number(env, "REPLAY_LIMIT", "500", int)),
            ws_transport=_choice(env, "WS_TRANSPORT", "auto", ("auto", "fast", "stock")),
            metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
            push_ack_wait=_number(env, "PUSH_ACK_WAIT", "10", float),
            vapid_private_key=vapid_key,
            vapid_subject=vapid_subject,
        )


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _number(env: Mapping[str, str], name: str, default: str, kind: type[Number]) -> Number:
    raw = env.get(name) or default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {raw!r}") from None
    if value < 0:
        raise ConfigurationError(f"{name} must not be negative")
    return value


def _vapid(env: Mapping[str, str], mode: str, var_dir: Path) -> tuple[str | None, str]:
    """The VAPID private key and subject: both set, or (development) generated under var/.

    Production without either runs with Web Push off (the page offers none, workers push
    nothing, and the web process says so at start); one without the other is a mistake
    and refuses to start.
    """
    key, subject = env.get("VAPID_PRIVATE_KEY") or None, env.get("VAPID_SUBJECT") or None
    if mode == "production":
        if key is None and subject is None:
            return None, DEVELOPMENT_VAPID_SUBJECT
        if key is None or subject is None:
            raise ConfigurationError(
                "production needs VAPID_PRIVATE_KEY and VAPID_SUBJECT together (or neither: "
                "Web Push off); `python -m notifier vapid-keys` prints a key pair"
            )
    if key is None:
        key = _generated_once(var_dir / "vapid-private-key", vapid.new_private_key)
    vapid.check_private_key(key)  # refuse a key that cannot sign, at start, not at a push
    return key, vapid.check_subject(subject or DEVELOPMENT_VAPID_SUBJECT)


def _generated_once(path: Path, make: Callable[[], str]) -> str:
    """A value generated once and kept in `path` (0600), whole or not at all.

    Written to a private file first and linked into place: a process that starts at the
    same time reads either nothing (and links its own, which fails) or the whole value.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make())
    try:
        os.link(partial, path)
    except FileExistsError:
        pass  # another process was first: use its value
    finally:
        partial.unlink()
    return path.read_text().strip()


def _development_secret(var_dir: Path) -> str:
    """A secret generated once per checkout and kept under var/, so restarts keep sessions."""
    path = var_dir / "jwt-secret"
    var_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        secret = secrets.token_urlsafe(48)
        f.write(secret)
    return secret
