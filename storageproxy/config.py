"""Storage proxy options: flags > ``BAI_STORAGE_*`` environment variables > defaults.

The same style as the other daemons (``backendai.daemon_options``), kept here because
the proxy imports nothing from the manager's packages.
A bad value raises :class:`ConfigError` naming the flag or variable it came from;
``python -m storageproxy`` prints it and exits with status 2.
"""
from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["OPTIONS", "ConfigError", "ProxyConfig", "VolumeSpec", "build_parser", "load_config"]

ENV_PREFIX = "BAI_STORAGE_"
BACKENDS = ("vfs", "loopquota")
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgtp])(?:i?b)?|b)?", re.IGNORECASE)
_VOLUME_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names where it came from."""


@dataclass(frozen=True)
class Option:
    key: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    def env(self, prefix: str) -> str:
        return prefix + self.key.upper()


def add_options(parser: argparse.ArgumentParser, options, prefix: str) -> None:
    for option in options:
        shown = option.default
        if isinstance(shown, int) and option.key.endswith("_mode"):
            shown = oct(shown)
        elif option.key.endswith("_listen") and isinstance(shown, tuple):
            shown = f"{shown[0]}:{shown[1]}"
        suffix = f"; default: {shown}" if shown not in (None, (), "") else ""
        kwargs = {"action": "append"} if option.key == "volume" else {}
        parser.add_argument(option.flag, dest=option.key, default=None, metavar=option.metavar,
                            help=f"{option.help} (env: {option.env(prefix)}{suffix})", **kwargs)


def resolve(options, args: argparse.Namespace, env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """Each option from its flag, else its variable, else its default."""
    values: dict[str, Any] = {}
    for option in options:
        raw, source = getattr(args, option.key), option.flag
        if raw is None and env.get(option.env(prefix), "").strip():
            raw, source = env[option.env(prefix)], option.env(prefix)
        if raw is None:
            values[option.key] = option.default
            continue
        try:
            values[option.key] = option.parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: {exc} (got {raw!r})") from None
    return values


def parse_url(text: Any) -> str:
    value = str(text).strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL such as http://127.0.0.1:6021")
    return value


def parse_host(text: Any) -> str:
    value = str(text).strip()
    if not value or len(value) > 128 or any(c.isspace() for c in value):
        raise ValueError("expected a host name or address")
    return value


def parse_seconds(text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError("expected a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("expected a positive number of seconds")
    return value


METRICS_INTERVAL_RANGE = (1.0, 3600.0)


def parse_metrics_interval(text: Any) -> float:
    """Seconds between volume measurements: at least 1 (each one walks the volumes), at most an hour
    (older figures are no longer news to Prometheus)."""
    value = parse_seconds(text)
    low, high = METRICS_INTERVAL_RANGE
    if not low <= value <= high:
        raise ValueError(f"expected {low:g} to {high:g} seconds")
    return value


def parse_log_level(text: Any) -> str:
    value = str(text).strip().upper()
    if value not in LOG_LEVELS:
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


@dataclass(frozen=True)
class VolumeSpec:
    name: str
    path: Path
    backend: str = "vfs"


def parse_size(text: Any) -> int:
    """A byte size: ``1073741824``, ``512m``, ``4g``, ``1.5GiB`` (powers of 1024)."""
    if isinstance(text, int) and not isinstance(text, bool):
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


def _positive_size(text: Any) -> int:
    value = parse_size(text)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def parse_volume(text: Any) -> VolumeSpec:
    """``NAME=PATH[:BACKEND]``."""
    raw = str(text).strip()
    name, sep, rest = raw.partition("=")
    if not sep or not _VOLUME_NAME_RE.fullmatch(name.strip()):
        raise ValueError("expected NAME=PATH[:BACKEND] with a NAME of 1-64 characters of [A-Za-z0-9._-]")
    path, backend = rest, "vfs"
    head, colon, tail = rest.rpartition(":")
    if colon and tail.strip().lower() in BACKENDS:
        path, backend = head, tail.strip().lower()
    elif colon and "/" not in tail:
        raise ValueError(f"unknown backend {tail!r} (expected one of {', '.join(BACKENDS)})")
    path = path.strip()
    if not path:
        raise ValueError("the volume needs a path")
    return VolumeSpec(name.strip(), Path(path).expanduser().resolve(), backend)


def parse_volumes(text: Any) -> tuple[VolumeSpec, ...]:
    items = text if isinstance(text, (list, tuple)) else [p for p in str(text).split(",") if p.strip()]
    specs = tuple(item if isinstance(item, VolumeSpec) else parse_volume(item) for item in items)
    seen = set()
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"the volume {spec.name!r} is given twice")
        seen.add(spec.name)
    return specs


def parse_port(text: Any) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError("expected a port number") from None
    if not 0 <= value <= 65535:
        raise ValueError("expected a port number 0-65535")
    return value


def parse_mode(text: Any) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        try:
            value = int(str(text).strip(), 8)
        except ValueError:
            raise ValueError("expected an octal mode such as 0755") from None
    if not 0 <= value <= 0o7777:
        raise ValueError("expected an octal mode such as 0755")
    return value


def parse_listen(text: Any) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port``; port 0: any free port) or ``off`` (no listener)."""
    value = str(text).strip()
    if value.lower() in ("off", "none", "no", "false"):
        return None
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535 or any(c.isspace() for c in host):
        raise ValueError("expected HOST:PORT (port 0: any free port) or off")
    return host, int(port)


def _parse_secret(text: Any) -> str:
    value = str(text).strip()
    if len(value) < 16:
        raise ValueError("the secret must be at least 16 characters long")
    return value


def _parse_path(text: Any) -> Path:
    value = str(text).strip()
    if not value:
        raise ValueError("expected a path")
    return Path(value).expanduser()


OPTIONS: tuple[Option, ...] = (
    Option("volume", parse_volumes, (), "a volume NAME=PATH[:BACKEND] (vfs or loopquota); repeat the flag "
           "(the variable takes a comma-separated list)", "NAME=PATH[:BACKEND]"),
    Option("manager_host", parse_host, "127.0.0.1", "the manager API's listen address", "HOST"),
    Option("manager_port", parse_port, 6022, "the manager API's port", "PORT"),
    Option("client_host", parse_host, "127.0.0.1", "the client API's listen address", "HOST"),
    Option("client_port", parse_port, 6021, "the client API's port", "PORT"),
    Option("secret", _parse_secret, None, "the secret shared with the manager (prefer the variable or a file)",
           "SECRET"),
    Option("secret_file", _parse_path, None, "a file holding the shared secret", "FILE"),
    Option("token_lifetime", parse_seconds, 3600.0, "seconds an upload/download token stays valid", "SECONDS"),
    Option("max_upload_size", _positive_size, 100 * 2**30, "the largest upload (e.g. 100g)", "SIZE"),
    Option("max_chunk_size", _positive_size, 64 * 2**20, "the largest tus PATCH body (e.g. 64m)", "SIZE"),
    Option("client_url", parse_url, None, "the client API's base URL as clients reach it "
           "(default http://<client host>:<client port>)", "URL"),
    Option("dir_mode", parse_mode, 0o755, "the mode of folder directories", "MODE"),
    Option("file_mode", parse_mode, 0o644, "the mode of uploaded files", "MODE"),
    Option("sweep_interval", parse_seconds, 600.0, "seconds between sweeps of stale staged uploads", "SECONDS"),
    Option("metrics_listen", parse_listen, ("127.0.0.1", 6023), "where /metrics is served, without "
           "authentication (HOST:PORT; port 0: any free port; off: not at all)", "HOST:PORT"),
    Option("metrics_interval", parse_metrics_interval, 30.0, "seconds between measurements of the volumes for "
           "/metrics (1 to 3600)", "SECONDS"),
    Option("log_level", parse_log_level, "INFO", "logging level", "LEVEL"),
)


@dataclass(frozen=True)
class ProxyConfig:
    volumes: tuple[VolumeSpec, ...]
    secret: str
    manager_host: str = "127.0.0.1"
    manager_port: int = 6022
    client_host: str = "127.0.0.1"
    client_port: int = 6021
    token_lifetime: float = 3600.0
    max_upload_size: int = 100 * 2**30
    max_chunk_size: int = 64 * 2**20
    client_url: str = "http://127.0.0.1:6021"
    dir_mode: int = 0o755
    file_mode: int = 0o644
    sweep_interval: float = 600.0
    log_level: str = "INFO"
    metrics_listen: tuple[str, int] | None = ("127.0.0.1", 6023)
    metrics_interval: float = 30.0
    extra: dict = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "volumes": [f"{v.name}={v.path}:{v.backend}" for v in self.volumes],
            "manager": f"{self.manager_host}:{self.manager_port}",
            "client": f"{self.client_host}:{self.client_port}", "client_url": self.client_url,
            "token_lifetime": self.token_lifetime, "max_upload_size": self.max_upload_size,
            "max_chunk_size": self.max_chunk_size, "dir_mode": oct(self.dir_mode),
            "file_mode": oct(self.file_mode), "secret": "***",
            "metrics": f"{self.metrics_listen[0]}:{self.metrics_listen[1]}" if self.metrics_listen else "off",
        }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m storageproxy",
        description="Backend.AI storage proxy: serves folder files to the manager and to clients "
                    "(precedence: flags > BAI_STORAGE_* variables > defaults).")
    add_options(parser, OPTIONS, ENV_PREFIX)
    return parser


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> ProxyConfig:
    env = os.environ if env is None else env
    parser = build_parser()
    args = parser.parse_args(argv)
    values = resolve(OPTIONS, args, env, ENV_PREFIX)
    if not values["volume"]:
        raise ConfigError("--volume: at least one volume NAME=PATH[:BACKEND] is required "
                          f"(or {ENV_PREFIX}VOLUME)")
    for spec in values["volume"]:
        if not spec.path.is_dir():
            raise ConfigError(f"--volume {spec.name}: {spec.path} is not a directory")
    secret = values["secret"]
    if secret is None and values["secret_file"] is not None:
        try:
            secret = _parse_secret(values["secret_file"].read_text())
        except OSError as exc:
            raise ConfigError(f"--secret-file: cannot read {values['secret_file']}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"--secret-file: {exc}") from None
    if secret is None:
        raise ConfigError(f"--secret: the shared secret is required (or --secret-file, {ENV_PREFIX}SECRET)")
    values["max_chunk_size"] = min(values["max_chunk_size"], values["max_upload_size"])
    client_url = values["client_url"] or f"http://{values['client_host']}:{values['client_port']}"
    return ProxyConfig(
        volumes=values["volume"], secret=secret,
        manager_host=values["manager_host"], manager_port=values["manager_port"],
        client_host=values["client_host"], client_port=values["client_port"],
        token_lifetime=values["token_lifetime"], max_upload_size=values["max_upload_size"],
        max_chunk_size=values["max_chunk_size"], client_url=client_url,
        dir_mode=values["dir_mode"], file_mode=values["file_mode"],
        sweep_interval=values["sweep_interval"], log_level=values["log_level"],
        metrics_listen=values["metrics_listen"], metrics_interval=values["metrics_interval"])
