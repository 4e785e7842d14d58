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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigError", "WorkerConfig", "load_config", "OPTIONS"]

ENV_PREFIX = "BAI_PROXY_"

from backendai.daemon_options import (  # noqa: E402 - shared with the agent daemon
    ConfigError,
    Option,
    add_options,
    parse_host,
    parse_log_format,
    parse_log_level,
    parse_name,
    parse_port_range,
    parse_seconds,
    parse_url,
    resolve,
)


def _mode(text: Any) -> str:
    value = str(text).strip().lower()
    if value not in ("port", "wildcard"):
        raise ValueError("expected port or wildcard")
    return value




def _port(text: Any) -> int:
    value = int(str(text).strip())
    if not 0 <= value <= 65535:
        raise ValueError("expected a port number 0-65535")
    return value




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




def _count(text: Any) -> int:
    value = int(str(text).strip())
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _processes(text: Any) -> int:
    value = int(str(text).strip())
    if value < 0 or value > 256:
        raise ValueError("expected 0 (one per core) to 256")
    return value or (os.cpu_count() or 1)


def _loop(text: Any) -> str:
    value = str(text).strip().lower()
    if value not in ("uvloop", "asyncio"):
        raise ValueError("expected uvloop or asyncio")
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




OPTIONS: tuple[Option, ...] = (
    Option("coordinator_url", parse_url, None, "the manager (coordinator) base URL", "URL"),
    Option("token", lambda v: str(v).strip() or None, None, "the worker token (prefer BAI_PROXY_TOKEN)", "TOKEN"),
    Option("name", parse_name, None, "this worker's authority (default: the host name)", "NAME"),
    Option("mode", _mode, "port", "frontend mode: port (a port per circuit) or wildcard (a subdomain each)",
           "{port,wildcard}"),
    Option("bind_host", parse_host, "127.0.0.1", "address the app listeners bind", "HOST"),
    Option("advertised_host", parse_host, None, "host users reach the apps at (default: the bind host)", "HOST"),
    Option("scheme", _scheme, "http", "scheme users reach the apps with (https behind a TLS terminator)",
           "{http,https}"),
    Option("port_range", parse_port_range, None, "port mode: the ports circuits get, inclusive", "LOW-HIGH"),
    Option("wildcard_domain", _domain, None, "wildcard mode: apps are <subdomain>.<this domain>", "DOMAIN"),
    Option("wildcard_port", _port, 0, "wildcard mode: the shared traffic port", "PORT"),
    Option("protocols", _protocols, None, "protocols carried (default http,tcp in port mode; http in wildcard)",
           "LIST"),
    Option("capacity", _count, 0, "most circuits to take (0: the port range / unlimited)", "N"),
    Option("api_host", parse_host, None, "address the setup/health/metrics/hint endpoint binds (default: bind host)",
           "HOST"),
    Option("api_port", _port, 6130, "port of the setup/health/metrics/hint endpoint", "PORT"),
    Option("api_endpoint", parse_url, None, "public URL of the setup endpoint (default scheme://advertised-host:api-port)",
           "URL"),
    Option("hint_url", lambda v: parse_url(v) if str(v).strip() else "", None,
           "where the coordinator POSTs sync hints (default http://<api host>:<api port>/v1/hint)", "URL"),
    Option("metrics_port", _port, 0, "also serve /metrics on this port (0: only on the API port)", "PORT"),
    Option("heartbeat_interval", parse_seconds, 10.0, "seconds between heartbeats", "SECONDS"),
    Option("sync_interval", parse_seconds, 30.0, "seconds between incremental circuit syncs (hints come sooner)",
           "SECONDS"),
    Option("full_sync_interval", parse_seconds, 300.0, "seconds between full circuit-table syncs", "SECONDS"),
    Option("release_after", parse_seconds, 600.0, "keep answering 404 on a freed port this long before closing it",
           "SECONDS"),
    Option("trusted_proxies", _networks, (), "networks whose X-Forwarded-For is believed (comma list)", "CIDRS"),
    Option("connect_timeout", parse_seconds, 10.0, "seconds to connect to an app", "SECONDS"),
    Option("upstream_timeout", parse_seconds, 300.0, "seconds to wait for an app's response head", "SECONDS"),
    Option("keepalive_timeout", parse_seconds, 75.0, "seconds an idle client connection is kept", "SECONDS"),
    Option("shutdown_grace", parse_seconds, 10.0, "seconds in-flight requests get on shutdown", "SECONDS"),
    Option("processes", _processes, 1, "processes serving the app ports together (SO_REUSEPORT; 0: one per core); "
           "the first one alone talks to the coordinator and serves the API port", "N"),
    Option("loop", _loop, "uvloop", "event loop: uvloop (a dependency; asyncio when it is missing) or asyncio",
           "{uvloop,asyncio}"),
    Option("log_level", parse_log_level, "INFO", "logging level", "LEVEL"),
    Option("log_format", parse_log_format, "plain", "log format: plain or json (one JSON object per line)",
           "FORMAT"),
    Option("webui_url", lambda v: parse_url(v) if str(v).strip() else "", None,
           "the manager's web UI as browsers reach it, the error pages' way back (default: the coordinator URL)",
           "URL"),
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
    webui_url: str = ""
    log_format: str = "plain"
    processes: int = 1
    loop: str = "uvloop"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m appproxy.worker",
                                     description="Backend.AI-style app proxy worker (HTTP, websockets, raw TCP).")
    add_options(parser, OPTIONS, ENV_PREFIX)
    return parser


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> WorkerConfig:
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    values = resolve(OPTIONS, args, env, ENV_PREFIX)
    if not values["coordinator_url"]:
        raise ConfigError(f"--coordinator-url (or {ENV_PREFIX}COORDINATOR_URL) is required")
    values["name"] = values["name"] or parse_name(socket.gethostname().split(".")[0] or "proxy")
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
    values["webui_url"] = values["webui_url"] or values["coordinator_url"]
    return WorkerConfig(**values)
