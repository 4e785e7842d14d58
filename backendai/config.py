"""Every setting the deployment can change, read from the environment in one place.

Each variable has an embedded default so that a fresh checkout runs with no
services installed (SQLite under the data directory, in-memory channel layer,
cache and rate limiter).  A malformed value stops start-up with a message that
names the variable.  ``settings.py`` consumes the ``Config`` object built here;
nothing else in the project reads ``os.environ`` for configuration.
"""
from __future__ import annotations

import ipaddress
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A configuration variable holds a value we cannot use."""

    def __init__(self, variable: str, message: str):
        self.variable = variable
        super().__init__(f"configuration error in {variable}: {message}")


def _get(env, name: str, default: str | None = None) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def _bool(env, name: str, default: bool) -> bool:
    raw = _get(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"expected a boolean (true/false), got {raw!r}")


def _int(env, name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"expected an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(name, f"must be at most {maximum}, got {value}")
    return value


def _float(env, name: str, default: float, minimum: float | None = None) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"expected a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(name, f"expected a finite number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    return value


def _list(env, name: str, default: list[str]) -> list[str]:
    raw = _get(env, name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def _networks(env, name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for item in _list(env, name, []):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(name, f"{item!r} is not an IP address or CIDR network") from None
    return networks


def _thresholds(env, name: str) -> dict:
    """``cpu_util=2,cuda_util=5`` -> {"cpu_util": 2.0, "cuda_util": 5.0}."""
    result = {}
    for item in _list(env, name, []):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in ("cpu_util", "mem_used", "cuda_util", "cuda_mem"):
            raise ConfigError(name, f"expected metric=percent pairs of cpu_util, mem_used, cuda_util, cuda_mem; got {item!r}")
        try:
            result[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(name, f"{value!r} is not a number") from None
    return result


def _path(env, name: str) -> Path | None:
    raw = _get(env, name)
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise ConfigError(name, f"must be an absolute path, got {raw!r}")
    return path


def _url(env, name: str) -> str | None:
    raw = _get(env, name)
    if raw is None:
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(name, f"must be an http(s) URL, got {raw!r}")
    return raw.rstrip("/")


def _size(env, name: str, default: int) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    from backendai.slots import SlotError, parse_binary_size

    try:
        value = parse_binary_size(raw)
    except SlotError:
        raise ConfigError(name, f"expected a size like 100g, got {raw!r}") from None
    if not value.is_finite() or value <= 0:
        raise ConfigError(name, f"must be a positive finite size, got {raw!r}")
    return int(value)


def parse_host_port(raw: str, name: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) -> (host, port); a ConfigError names ``name``."""
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not host:
        raise ConfigError(name, f"expected host:port, got {raw!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(name, f"expected a port from 0 to 65535 after the colon, got {raw!r}")
    if not re.fullmatch(r"[A-Za-z0-9._:-]+", host):
        raise ConfigError(name, f"expected a host name or an IP address before the port, got {raw!r}")
    return host, int(port)


def _host_port(env, name: str, default: str | None) -> tuple[str, int] | None:
    raw = _get(env, name, default)
    if raw is None:
        return None
    host, port = parse_host_port(raw, name)
    if port == 0:
        raise ConfigError(name, f"expected a port from 1 to 65535 after the colon, got {raw!r}")
    return host, port


def _database_url(env, data_dir: Path) -> str:
    raw = _get(env, "DATABASE_URL")
    if raw is None:
        return f"sqlite:///{data_dir / 'db.sqlite3'}"
    scheme = urlparse(raw).scheme
    if scheme not in ("postgres", "postgresql", "pgsql", "sqlite"):
        raise ConfigError("DATABASE_URL", f"unsupported scheme {scheme!r}; use postgres:// or sqlite://")
    return raw


def _db_pool(env) -> dict:
    """The per-process PostgreSQL connection pool (docs/production.md): DB_POOL_MAX_SIZE=0 turns it off."""
    max_size = _int(env, "DB_POOL_MAX_SIZE", 10, minimum=0, maximum=1000)
    min_size = _int(env, "DB_POOL_MIN_SIZE", 1, minimum=0, maximum=1000)
    if max_size and min_size > max_size:
        raise ConfigError("DB_POOL_MIN_SIZE", f"must not exceed DB_POOL_MAX_SIZE ({max_size}), got {min_size}")
    return {
        "db_pool_min_size": min_size,
        "db_pool_max_size": max_size,
        "db_pool_timeout": _float(env, "DB_POOL_TIMEOUT", 5.0, minimum=0.1),
        "db_conn_max_age": _int(env, "DB_CONN_MAX_AGE", 0, minimum=0),
        "db_disable_server_side_cursors": _bool(env, "DB_DISABLE_SERVER_SIDE_CURSORS", False),
    }


def _redis_url(env) -> str | None:
    raw = _get(env, "REDIS_URL")
    if raw is None:
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("REDIS_URL", f"unsupported scheme {parsed.scheme!r}; use redis://host:port/db")
    if parsed.scheme != "unix" and not parsed.hostname:
        raise ConfigError("REDIS_URL", "missing host")
    return raw


#: Seconds the Redis channel layer blocks in one receive (channels_redis ``brpop_timeout``).
CHANNEL_LAYER_BLOCKING_RECEIVE = 5


def _redis_socket_timeout(env) -> int:
    """Read timeout of every Redis connection: it must outlast the channel layer's blocking
    receive, or an idle websocket's receive times out and its consumer dies."""
    name = "REDIS_SOCKET_TIMEOUT"
    value = _int(env, name, 30, maximum=3600)
    if value < 2 * CHANNEL_LAYER_BLOCKING_RECEIVE:
        raise ConfigError(name, f"must be at least {2 * CHANNEL_LAYER_BLOCKING_RECEIVE} s (twice the channel "
                                f"layer's {CHANNEL_LAYER_BLOCKING_RECEIVE} s blocking receive), got {value}")
    return value


def _secret_key(env, data_dir: Path) -> str:
    raw = _get(env, "SECRET_KEY")
    if raw is not None:
        if len(raw) < 32:
            raise ConfigError("SECRET_KEY", "must be at least 32 characters long")
        return raw
    # Embedded mode: generate once, keep it in the data directory (mode 600).
    return _generated_once(data_dir / "secret_key", 50)


def _generated_once(path: Path, size: int) -> str:
    """A secret generated into ``path`` (mode 600) by the first process that needs it; processes
    starting at the same moment (the embedded stack's web server, worker and beat) all get that one.
    It is written to a temporary file and linked into place whole, so no process reads it half
    written; one that loses the race reads the winner's."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(size))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process linked its own first: that one is the secret
    finally:
        os.unlink(temporary)
    return path.read_text().strip()


STORAGE_PROXY_SECRET_FILE = "storage-proxy-secret"
APPPROXY_COORDINATOR_SECRET_FILE = "appproxy-coordinator-secret"


def _shared_secret(env, data_dir: Path, name: str, filename: str) -> str:
    """A secret two processes share: the variable ``name``, else generated once into
    ``<data dir>/<filename>`` (mode 600), which a process started on the same data directory reads too."""
    raw = _get(env, name)
    if raw is not None:
        if len(raw) < 16:
            raise ConfigError(name, "must be at least 16 characters long")
        return raw
    return _generated_once(data_dir / filename, 32)


def storage_proxy_secret(env, data_dir: Path) -> str:
    """The secret the manager and the embedded storage proxy share (the stack hands the file to the
    proxy with ``--secret-file``)."""
    return _shared_secret(env, data_dir, "STORAGE_PROXY_SECRET", STORAGE_PROXY_SECRET_FILE)


def _appproxy_coordinator_secret(env, data_dir: Path) -> str:
    """The secret the manager calls the app proxy coordinator's REST API with."""
    return _shared_secret(env, data_dir, "APPPROXY_COORDINATOR_SECRET", APPPROXY_COORDINATOR_SECRET_FILE)


@dataclass(frozen=True)
class Config:
    data_dir: Path
    debug: bool
    secret_key: str
    database_url: str
    redis_url: str | None
    allowed_hosts: list[str]
    csrf_trusted_origins: list[str]
    trusted_proxies: list = field(default_factory=list)
    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    db_pool_timeout: float = 5.0
    db_conn_max_age: int = 0
    db_disable_server_side_cursors: bool = False
    default_rate_limit: int = 10000
    keypair_use_interval: int = 1
    web_request_threads: int = 4
    log_level: str = "INFO"
    log_format: str = "plain"
    access_log_file: Path | None = None
    time_zone: str = "UTC"
    agent_heartbeat_timeout: int = 30
    agent_lost_grace: int = 90
    agent_sync_interval: int = 5
    agent_sync_max_wait: int = 15
    redis_socket_timeout: int = 30
    internal_web_url: str | None = None
    beat_max_age: int = 30
    audit_retention_days: int = 90
    session_create_max_wait: int = 120
    session_scheduled_timeout: int = 120
    session_preparing_timeout: int = 1800
    session_terminating_timeout: int = 120
    idle_network_timeout: int = 0
    idle_utilization_window: int = 600
    idle_utilization_thresholds: dict = field(default_factory=dict)
    appproxy_worker_heartbeat_timeout: int = 30
    appproxy_circuit_idle_timeout: int = 3600
    appproxy_setup_token_ttl: int = 120
    appproxy_permit_ttl: int = 604800
    appproxy_coordinator_url: str | None = None
    appproxy_coordinator_secret: str = ""
    appproxy_coordinator_timeout: float = 10.0
    vfolder_root: Path | None = None
    vfolder_token_lifetime: int = 3600
    vfolder_max_upload_size: int = 100 * 2**30
    vfolder_clone_timeout: int = 6 * 3600
    storage_proxy_manager_url: str = "http://127.0.0.1:6022"
    storage_proxy_client_url: str = "http://127.0.0.1:6021"
    storage_proxy_secret: str = ""
    storage_proxy_timeout: float = 10.0
    storage_proxy_lost_timeout: int = 30
    api_max_body: int = 4 * 2**20
    session_upload_max_size: int = 2**30
    session_upload_max_files: int = 100
    callback_allowed_networks: list = field(default_factory=list)
    callback_max_attempts: int = 8
    callback_backoff_base: int = 10
    callback_backoff_cap: int = 3600
    secure_cookies: bool = False
    login_failure_limit: int = 10
    login_lockout_seconds: int = 1200
    metrics_listen: tuple = ("127.0.0.1", 18080)
    metrics_advertise: tuple | None = None
    metrics_public: bool = False

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured: in-memory layers, local task runner."""
        return self.redis_url is None


def load(env=None) -> Config:
    env = os.environ if env is None else env
    data_dir_raw = _get(env, "BACKEND_DATA_DIR", str(BASE_DIR / "var"))
    data_dir = Path(data_dir_raw).expanduser()
    if not data_dir.is_absolute():
        data_dir = (BASE_DIR / data_dir).resolve()
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError("BACKEND_DATA_DIR", f"{data_dir} exists and is not a directory")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("BACKEND_DATA_DIR", f"cannot create {data_dir}: {exc.strerror}") from None
    log_level = (_get(env, "LOG_LEVEL", "INFO") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError("LOG_LEVEL", f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}")
    log_format = (_get(env, "LOG_FORMAT", "plain") or "plain").lower()
    if log_format not in ("plain", "json"):
        raise ConfigError("LOG_FORMAT", f"expected plain or json, got {log_format!r}")
    return Config(
        data_dir=data_dir,
        debug=_bool(env, "DEBUG", False),
        secret_key=_secret_key(env, data_dir),
        database_url=_database_url(env, data_dir),
        **_db_pool(env),
        redis_url=_redis_url(env),
        allowed_hosts=_list(env, "ALLOWED_HOSTS", ["*"]),
        csrf_trusted_origins=_list(env, "CSRF_TRUSTED_ORIGINS", []),
        trusted_proxies=_networks(env, "TRUSTED_PROXIES"),
        default_rate_limit=_int(env, "DEFAULT_RATE_LIMIT", 10000, minimum=1),
        keypair_use_interval=_int(env, "KEYPAIR_USE_INTERVAL", 1, minimum=0, maximum=3600),
        web_request_threads=_int(env, "WEB_REQUEST_THREADS", 4, minimum=0, maximum=1000),
        log_level=log_level,
        log_format=log_format,
        # the one-line-per-request access log (logger backendai.access); unset: with the other logs
        access_log_file=_path(env, "ACCESS_LOG_FILE"),
        time_zone=_get(env, "TIME_ZONE", "UTC"),
        agent_heartbeat_timeout=_int(env, "AGENT_HEARTBEAT_TIMEOUT", 30, minimum=3),
        # how long a LOST agent's sessions wait for it to come back before they are ended
        agent_lost_grace=_int(env, "AGENT_LOST_GRACE", 3 * _int(env, "AGENT_HEARTBEAT_TIMEOUT", 30, minimum=3),
                              minimum=0, maximum=7 * 86400),
        agent_sync_interval=_int(env, "AGENT_SYNC_INTERVAL", 5, minimum=1, maximum=300),
        # how long a sync may be held open waiting for a change (0: never held; docs/agent-protocol.md)
        agent_sync_max_wait=_int(env, "AGENT_SYNC_MAX_WAIT", 15, minimum=0, maximum=300),
        redis_socket_timeout=_redis_socket_timeout(env),
        internal_web_url=_url(env, "INTERNAL_WEB_URL"),
        # beat ticks at least every 5 s and records a tick at most every 5 s: 15 s is the least that
        # does not flap
        beat_max_age=_int(env, "BEAT_MAX_AGE", 30, minimum=15),
        audit_retention_days=_int(env, "AUDIT_RETENTION_DAYS", 90, minimum=0, maximum=36500),
        session_create_max_wait=_int(env, "SESSION_CREATE_MAX_WAIT", 120, minimum=1),
        session_scheduled_timeout=_int(env, "SESSION_SCHEDULED_TIMEOUT", 120, minimum=5),
        session_preparing_timeout=_int(env, "SESSION_PREPARING_TIMEOUT", 1800, minimum=5),
        session_terminating_timeout=_int(env, "SESSION_TERMINATING_TIMEOUT", 120, minimum=5),
        idle_network_timeout=_int(env, "IDLE_NETWORK_TIMEOUT", 0, minimum=0),
        idle_utilization_window=_int(env, "IDLE_UTILIZATION_WINDOW", 600, minimum=15),
        idle_utilization_thresholds=_thresholds(env, "IDLE_UTILIZATION_THRESHOLDS"),
        appproxy_worker_heartbeat_timeout=_int(env, "APPPROXY_WORKER_HEARTBEAT_TIMEOUT", 30, minimum=3),
        appproxy_circuit_idle_timeout=_int(env, "APPPROXY_CIRCUIT_IDLE_TIMEOUT", 3600, minimum=0),
        appproxy_setup_token_ttl=_int(env, "APPPROXY_SETUP_TOKEN_TTL", 120, minimum=5),
        appproxy_permit_ttl=_int(env, "APPPROXY_PERMIT_TTL", 604800, minimum=60),
        # the app proxy coordinator running on its own (python -m appproxy.coordinator); empty: in-process
        appproxy_coordinator_url=_url(env, "APPPROXY_COORDINATOR_URL"),
        appproxy_coordinator_secret=_appproxy_coordinator_secret(env, data_dir),
        appproxy_coordinator_timeout=_float(env, "APPPROXY_COORDINATOR_TIMEOUT", 10.0, minimum=0.5),
        vfolder_root=_path(env, "VFOLDER_ROOT"),
        vfolder_token_lifetime=_int(env, "VFOLDER_TOKEN_LIFETIME", 3600, minimum=30),
        vfolder_max_upload_size=_size(env, "VFOLDER_MAX_UPLOAD_SIZE", 100 * 2**30),
        vfolder_clone_timeout=_int(env, "VFOLDER_CLONE_TIMEOUT", 6 * 3600, minimum=60),
        # the embedded storage proxy "local" (docs/vfolders.md): its manager API, the client API URL
        # clients upload to and download from, and the secret both sides share
        storage_proxy_manager_url=_url(env, "STORAGE_PROXY_MANAGER_URL") or "http://127.0.0.1:6022",
        storage_proxy_client_url=_url(env, "STORAGE_PROXY_CLIENT_URL") or "http://127.0.0.1:6021",
        storage_proxy_secret=storage_proxy_secret(env, data_dir),
        storage_proxy_timeout=float(_int(env, "STORAGE_PROXY_TIMEOUT", 10, minimum=1, maximum=600)),
        storage_proxy_lost_timeout=_int(env, "STORAGE_PROXY_LOST_TIMEOUT", 30, minimum=5),
        api_max_body=_size(env, "API_MAX_BODY", 4 * 2**20),
        # files uploaded into a running session's work directory, per request (docs/api.md)
        session_upload_max_size=_size(env, "SESSION_UPLOAD_MAX_SIZE", 2**30),
        session_upload_max_files=_int(env, "SESSION_UPLOAD_MAX_FILES", 100, minimum=1, maximum=10_000),
        callback_allowed_networks=_networks(env, "CALLBACK_ALLOWED_NETWORKS"),
        callback_max_attempts=_int(env, "CALLBACK_MAX_ATTEMPTS", 8, minimum=1, maximum=100),
        callback_backoff_base=_int(env, "CALLBACK_BACKOFF_BASE", 10, minimum=1),
        callback_backoff_cap=_int(env, "CALLBACK_BACKOFF_CAP", 3600, minimum=1),
        secure_cookies=_bool(env, "SECURE_COOKIES", False),
        login_failure_limit=_int(env, "LOGIN_FAILURE_LIMIT", 10, minimum=1, maximum=1000),
        login_lockout_seconds=_int(env, "LOGIN_LOCKOUT_SECONDS", 1200, minimum=1),
        # the internal metrics listener (manage.py serve_metrics): /metrics and /metrics/service_discovery;
        # what the service discovery lists for it; whether the public API port serves /metrics too
        metrics_listen=_host_port(env, "METRICS_LISTEN", "127.0.0.1:18080"),
        metrics_advertise=_host_port(env, "METRICS_ADVERTISE", None),
        metrics_public=_bool(env, "METRICS_PUBLIC", False),
    )
