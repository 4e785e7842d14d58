"""Daemon configuration: flags > ``BAI_AGENT_*`` environment variables > TOML file > defaults.

Every option has a long flag (``--port-range``), an environment variable
(``BAI_AGENT_PORT_RANGE``) and a TOML key (``port_range``, top level or under an
``[agent]`` table).  The TOML file is named by ``--config`` or
``BAI_AGENT_CONFIG``.  A bad value raises :class:`ConfigError` naming where it
came from; the CLI prints it and exits with status 2.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
import socket
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

__all__ = ["AgentConfig", "ConfigError", "OPTIONS", "build_parser", "load_config", "parse_size"]

ENV_PREFIX = "BAI_AGENT_"
AGENT_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgtp])(?:i?b)?|b)?", re.IGNORECASE)


from backendai.daemon_options import (  # noqa: E402 - shared with the proxy worker
    ConfigError,
    Option,
    add_options,
    parse_bool,
    parse_host,
    parse_log_format,
    parse_log_level,
    parse_port_range,
    parse_seconds,
    parse_url,
    resolve,
)

# -- value parsers (raise ValueError with a short explanation) -------------------------------

def parse_size(text: Any) -> int:
    """A byte size: ``1073741824``, ``512m``, ``4g``, ``1.5GiB`` (powers of 1024)."""
    if isinstance(text, bool):
        raise ValueError("expected a size such as 4g or 1073741824")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("must not be negative")
        return text
    match = _SIZE_RE.fullmatch(str(text).strip())
    if not match:
        raise ValueError("expected a size such as 4g, 512m or 1073741824")
    number, unit = Decimal(match[1]), (match[2] or "").lower()
    if not unit and number != number.to_integral_value():
        raise ValueError("fractional sizes need a unit")
    return int(number * (1024 ** ("kmgtp".index(unit) + 1 if unit else 0)))




def _parse_agent_id(text: Any) -> str:
    value = str(text).strip()
    if not AGENT_ID_RE.fullmatch(value):
        raise ValueError("1-64 characters of [A-Za-z0-9._-]")
    return value


def _parse_name(text: Any) -> str:
    value = str(text).strip()
    if not value or len(value) > 64:
        raise ValueError("expected 1-64 characters")
    return value


def _parse_backend(text: Any) -> str:
    value = str(text).strip().lower()
    if value not in ("docker", "local"):
        raise ValueError("expected docker or local")
    return value


def _parse_ip(text: Any) -> str:
    value = str(text).strip()
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("expected an IP address such as 127.0.0.1 or 0.0.0.0") from None
    return value








def _parse_cpu(text: Any) -> Decimal:
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError("expected a number of CPU cores") from None
    if not value.is_finite() or value < 0:
        raise ValueError("expected a non-negative number of CPU cores")
    return value


def _parse_device_list(text: Any) -> tuple[str, ...]:
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    values = tuple(str(item).strip() for item in items if str(item).strip())
    for value in values:
        if not (value.isdigit() or re.fullmatch(r"(GPU|MIG)-[0-9A-Za-z-]+", value, re.IGNORECASE)):
            raise ValueError(f"{value!r} is neither a GPU index nor a GPU UUID")
    return values




def _parse_long_poll(text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError("expected a number of seconds (0 turns the long poll off)") from None
    if not 0 <= value <= 300:
        raise ValueError("expected 0 to 300 seconds (0 turns the long poll off)")
    return value


def _parse_path(text: Any) -> Path:
    value = str(text).strip()
    if not value:
        raise ValueError("expected a path")
    return Path(value).expanduser()


def parse_listen(text: Any) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port``; port 0: any free port) or ``off``/empty (no listener)."""
    value = str(text).strip()
    if value.lower() in ("", "off", "none", "no", "false"):
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port or off, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


OPTIONS: tuple[Option, ...] = (
    Option("manager_url", parse_url, "http://127.0.0.1:8000", "the manager's base URL", "URL"),
    Option("token", lambda v: str(v).strip() or None, None, "the agent token (prefer BAI_AGENT_TOKEN)", "TOKEN"),
    Option("agent_id", _parse_agent_id, None, "this agent's id (default: the host name)", "ID", env_name="ID"),
    Option("scaling_group", _parse_name, "default", "the scaling group to register into", "NAME"),
    Option("region", _parse_name, "local", "the region reported to the manager", "NAME"),
    Option("backend", _parse_backend, "docker", "how kernels run: docker or local", "{docker,local}"),
    Option("host_address", _parse_ip, "127.0.0.1", "the address service ports are published on", "IP"),
    Option("address", parse_host, None, "the address the manager/proxy use to reach published ports", "HOST"),
    Option("public_host", parse_host, None, "the host name users are shown (default: address)", "HOST"),
    Option("port_range", parse_port_range, (30000, 31000), "host ports for kernel services, inclusive", "LOW-HIGH"),
    Option("scratch_root", _parse_path, None, "working directories and state (default ./var/agent-<id>)", "DIR"),
    Option("sync_interval", parse_seconds, 5.0, "seconds between syncs until the manager says otherwise",
           "SECONDS"),
    Option("long_poll", _parse_long_poll, 15.0,
           "seconds the manager may hold a sync until something changes (0: sync every sync interval)", "SECONDS"),
    Option("stop_timeout", parse_seconds, 10.0, "grace period before a stopped kernel is killed", "SECONDS"),
    Option("reserved_cpu", _parse_cpu, Decimal(0), "CPU cores kept for the host", "CORES"),
    Option("reserved_mem", parse_size, 0, "memory kept for the host (e.g. 1g)", "SIZE"),
    Option("cpu_limit", _parse_cpu, None, "offer at most this many CPU cores", "CORES"),
    Option("mem_limit", parse_size, None, "offer at most this much memory (e.g. 16g)", "SIZE"),
    Option("gpu_devices", _parse_device_list, None, "only these GPUs (comma-separated indices or UUIDs)", "LIST"),
    Option("local_allow_root", parse_bool, False, "let the local backend (no isolation) run kernels as root",
           "BOOL", const="true"),
    Option("runtime_python", _parse_path, None,
           "the Python local kernels run code with (`backend.ai run`; default: the agent's own)", "PATH"),
    Option("metrics_listen", parse_listen, "127.0.0.1:6003",
           "where this agent serves /metrics (host:port; port 0: any free port; off: not at all)", "HOST:PORT"),
    Option("log_level", parse_log_level, "INFO", "logging level", "LEVEL"),
    Option("log_format", parse_log_format, "plain", "log format: plain or json (one JSON object per line)",
           "FORMAT"),
)
_BY_KEY = {option.key: option for option in OPTIONS}


@dataclass(frozen=True)
class AgentConfig:
    """The resolved configuration of one daemon."""

    manager_url: str = "http://127.0.0.1:8000"
    token: str | None = None
    agent_id: str = "agent"
    scaling_group: str = "default"
    region: str = "local"
    backend: str = "docker"
    host_address: str = "127.0.0.1"
    address: str | None = None
    public_host: str | None = None
    port_range: tuple[int, int] = (30000, 31000)
    scratch_root: Path = field(default_factory=lambda: Path("var/agent-agent").resolve())
    sync_interval: float = 5.0
    long_poll: float = 15.0
    stop_timeout: float = 10.0
    reserved_cpu: Decimal = Decimal(0)
    reserved_mem: int = 0
    cpu_limit: Decimal | None = None
    mem_limit: int | None = None
    gpu_devices: tuple[str, ...] | None = None
    local_allow_root: bool = False
    runtime_python: Path | None = None
    log_level: str = "INFO"
    log_format: str = "plain"
    metrics_listen: tuple[str, int] | None = None  # the CLI's default is 127.0.0.1:6003
    config_file: Path | None = None

    @property
    def kernel_host(self) -> str | None:
        """The host reported with each kernel: where its published ports can be reached."""
        try:
            wildcard = ipaddress.ip_address(self.host_address).is_unspecified
        except ValueError:
            wildcard = False
        return self.address if wildcard else self.host_address

    def public(self) -> dict[str, Any]:
        """The configuration without secrets (for logs)."""
        data = {key: getattr(self, key) for key in _BY_KEY}
        data["token"] = "***" if self.token else None
        data["scratch_root"] = str(self.scratch_root)
        data["config_file"] = str(self.config_file) if self.config_file else None
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in data.items()}


def default_agent_id() -> str:
    """The host name, made into a valid agent id."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("-.") or "agent"
    return name[:64]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agents.daemon",
        description="Backend.AI agent daemon: runs kernels and syncs with the manager "
                    "(precedence: flags > BAI_AGENT_* variables > --config TOML > defaults).",
    )
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="TOML file with the options below as keys (env: BAI_AGENT_CONFIG)")
    parser.add_argument("--discover", action="store_true",
                        help="print the discovered capacity and devices as JSON and exit")
    add_options(parser, OPTIONS, ENV_PREFIX)
    return parser


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    if isinstance(data.get("agent"), dict):
        nested = data.pop("agent")
        data = {**data, **nested}
    unknown = sorted(set(data) - set(_BY_KEY))
    if unknown:
        raise ConfigError(f"config file {path}: unknown option(s) {', '.join(unknown)}")
    return data


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
                ) -> tuple[AgentConfig, argparse.Namespace]:
    """Resolve the configuration; returns it with the parsed flags (for ``--discover``)."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(list(argv) if argv is not None else None)

    config_path = args.config or environ.get(ENV_PREFIX + "CONFIG") or None
    file_values = _load_toml(Path(config_path).expanduser()) if config_path else {}

    values = resolve(OPTIONS, args, environ, ENV_PREFIX, file_values, str(config_path))

    if values["agent_id"] is None:
        values["agent_id"] = default_agent_id()
    if values["scratch_root"] is None:
        values["scratch_root"] = Path("var") / f"agent-{values['agent_id']}"
    values["scratch_root"] = Path(values["scratch_root"]).absolute()
    if isinstance(values["metrics_listen"], str):  # the default, given as text
        values["metrics_listen"] = parse_listen(values["metrics_listen"])
    if values["public_host"] is None and values["address"] is not None:
        values["public_host"] = values["address"]
    config = AgentConfig(**values, config_file=Path(config_path) if config_path else None)
    logging.getLogger(__name__).debug("configuration: %s", config.public())
    return config, args
