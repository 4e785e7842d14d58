"""Worker configuration: flags > ``BAI_PROXY_*`` environment variables > defaults.

Every option has a long flag (``--port-range``) and an environment variable
(``BAI_PROXY_PORT_RANGE``).  A bad value raises :class:`ConfigError` naming
the flag and the variable; the CLI prints it and exits with status 2.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ConfigError", "WorkerConfig", "load_config", "OPTIONS"]

ENV_PREFIX = "BAI_PROXY_"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the option."""


def _url(text: Any) -> str:
    value = str(text).strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL such as http://127.0.0.1:8091")
    return value


def _name(text: Any) -> str:
    value = str(text).strip()
    if not NAME_RE.fullmatch(value):
        raise ValueError("1-64 characters of [A-Za-z0-9._-]")
    return value


def _mode(text: Any) -> str:
    value = str(text).strip().lower()
    if value not in ("port", "wildcard"):
        raise ValueError("expected port or wildcard")
    return value


def _host(text: Any) -> str:
    value = str(text).strip()
    if not value or any(c in value for c in "/ @"):
        raise ValueError("expected a host name or an IP address")
    return value


def _port(text: Any) -> int:
    value = int(str(text).strip())
    if not 0 <= value <= 65535:
        raise ValueError("expected a port number 0-65535")
    return value


def _port_range(text: Any) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", str(text))
    if not match:
        raise ValueError("expected LOW-HIGH, e.g. 32000-32099")
    low, high = int(match[1]), int(match[2])
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"{low}-{high} is not a range of ports")
    return low, high


def _domain(text: Any) -> str:
    value = str(text).strip().strip(".").lower()
    if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", value):
        raise ValueError("expected a domain such as apps.example.com")
    return value


def _protocols(text: Any) -> tuple[str, ...]:
    values = tuple(dict.fromkeys(p.strip().lower() for p in str(text).split(",") if p.strip()))
    if not values or any(p not in ("http", "tcp") for p in values):
        raise ValueError("expected a comma list of http, tcp")
    return values


def _seconds(text: Any) -> float:
    value = float(str(text).strip())
    if value <= 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _count(text: Any) -> int:
    value = int(str(text).strip())
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _networks(text: Any) -> tuple:
    result = []
    for item in str(text).split(","):
        if item.strip():
            result.append(ipaddress.ip_network(item.strip(), strict=False))
    return tuple(result)


def _scheme(text: Any) -> str:
    value = str(text).strip().lower()
    if value not in ("http", "https"):
        raise ValueError("expected http or https")
    return value


def _level(text: Any) -> str:
    value = str(text).strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return value


@dataclass(frozen=True)
class Option:
    key: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str = "VALUE"

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()


OPTIONS: tuple[Option, ...] = (
    Option("coordinator_url", _url, None, "the manager (coordinator) base URL", "URL"),
    Option("token", lambda v: str(v).strip() or None, None, "the worker token (prefer BAI_PROXY_TOKEN)", "TOKEN"),
    Option("name", _name, None, "this worker's authority (default: the host name)", "NAME"),
    Option("mode", _mode, "port", "frontend mode: port (a port per circuit) or wildcard (a subdomain each)",
           "{port,wildcard}"),
    Option("bind_host", _host, "127.0.0.1", "address the app listeners bind", "HOST"),
    Option("advertised_host", _host, None, "host users reach the apps at (default: the bind host)", "HOST"),
    Option("scheme", _scheme, "http", "scheme users reach the apps with (https behind a TLS terminator)",
           "{http,https}"),
    Option("port_range", _port_range, None, "port mode: the ports circuits get, inclusive", "LOW-HIGH"),
    Option("wildcard_domain", _domain, None, "wildcard mode: apps are <subdomain>.<this domain>", "DOMAIN"),
    Option("wildcard_port", _port, 0, "wildcard mode: the shared traffic port", "PORT"),
    Option("protocols", _protocols, None, "protocols carried (default http,tcp in port mode; http in wildcard)",
           "LIST"),
    Option("capacity", _count, 0, "most circuits to take (0: the port range / unlimited)", "N"),
    Option("api_host", _host, None, "address the setup/health/metrics/hint endpoint binds (default: bind host)",
           "HOST"),
    Option("api_port", _port, 6130, "port of the setup/health/metrics/hint endpoint", "PORT"),
    Option("api_endpoint", _url, None, "public URL of the setup endpoint (default scheme://advertised-host:api-port)",
           "URL"),
    Option("hint_url", lambda v: _url(v) if str(v).strip() else "", None,
           "where the coordinator POSTs sync hints (default http://<api host>:<api port>/v1/hint)", "URL"),
    Option("metrics_port", _port, 0, "also serve /metrics on this port (0: only on the API port)", "PORT"),
    Option("heartbeat_interval", _seconds, 10.0, "seconds between heartbeats", "SECONDS"),
    Option("sync_interval", _seconds, 30.0, "seconds between incremental circuit syncs (hints come sooner)",
           "SECONDS"),
    Option("full_sync_interval", _seconds, 300.0, "seconds between full circuit-table syncs", "SECONDS"),
    Option("release_after", _seconds, 600.0, "keep answering 404 on a freed port this long before closing it",
           "SECONDS"),
    Option("trusted_proxies", _networks, (), "networks whose X-Forwarded-For is believed (comma list)", "CIDRS"),
    Option("connect_timeout", _seconds, 10.0, "seconds to connect to an app", "SECONDS"),
    Option("upstream_timeout", _seconds, 300.0, "seconds to wait for an app's response head", "SECONDS"),
    Option("keepalive_timeout", _seconds, 75.0, "seconds an idle client connection is kept", "SECONDS"),
    Option("shutdown_grace", _seconds, 10.0, "seconds in-flight requests get on shutdown", "SECONDS"),
    Option("log_level", _level, "INFO", "logging level", "LEVEL"),
)


@dataclass(frozen=True)
class WorkerConfig:
    coordinator_url: str
    token: str | None
    name: str
    mode: str
    bind_host: str
    advertised_host: str
    scheme: str
    port_range: tuple[int, int] | None
    wildcard_domain: str | None
    wildcard_port: int
    protocols: tuple[str, ...]
    capacity: int
    api_host: str
    api_port: int
    api_endpoint: str
    hint_url: str
    metrics_port: int
    heartbeat_interval: float
    sync_interval: float
    full_sync_interval: float
    release_after: float
    trusted_proxies: tuple
    connect_timeout: float
    upstream_timeout: float
    keepalive_timeout: float
    shutdown_grace: float
    log_level: str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m appproxy.worker",
                                     description="Backend.AI-style app proxy worker (HTTP, websockets, raw TCP).")
    for option in OPTIONS:
        default = f" (default: {option.default})" if option.default not in (None, (), "") else ""
        parser.add_argument(option.flag, dest=option.key, default=None, metavar=option.metavar,
                            help=f"{option.help}{default}; env {option.env}")
    return parser


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> WorkerConfig:
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw, where = getattr(args, option.key), option.flag
        if raw is None and env.get(option.env, "").strip():
            raw, where = env[option.env], option.env
        if raw is None:
            values[option.key] = option.default
            continue
        try:
            values[option.key] = option.parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if not values["coordinator_url"]:
        raise ConfigError(f"--coordinator-url (or {ENV_PREFIX}COORDINATOR_URL) is required")
    values["name"] = values["name"] or _name(socket.gethostname().split(".")[0] or "proxy")
    if values["mode"] == "port":
        if not values["port_range"]:
            raise ConfigError("--port-range is required in port mode (e.g. 32000-32099)")
        values["protocols"] = values["protocols"] or ("http", "tcp")
    else:
        if not values["wildcard_domain"] or not values["wildcard_port"]:
            raise ConfigError("--wildcard-domain and --wildcard-port are required in wildcard mode")
        values["protocols"] = values["protocols"] or ("http",)
        if "tcp" in values["protocols"]:
            raise ConfigError("--protocols: raw TCP needs port mode")
    bind = values["bind_host"]
    if not values["advertised_host"]:
        values["advertised_host"] = socket.gethostname() if bind in ("0.0.0.0", "::") else bind
    values["api_host"] = values["api_host"] or bind
    if not values["api_port"]:
        raise ConfigError("--api-port must not be 0")
    if not values["api_endpoint"]:
        values["api_endpoint"] = f"{values['scheme']}://{values['advertised_host']}:{values['api_port']}"
    if values["hint_url"] is None:
        local = "127.0.0.1" if values["api_host"] in ("0.0.0.0", "::") else values["api_host"]
        values["hint_url"] = f"http://{local}:{values['api_port']}/v1/hint"
    return WorkerConfig(**values)
