"""Options of the standalone daemons (agent, proxy worker): one declaration per
option, spelled as a flag, an environment variable and (for the agent) a TOML
key, resolved with the precedence flags > environment > file > default.  Pure
Python: the daemons import no Django."""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names where it came from."""


@dataclass(frozen=True)
class Option:
    """One configuration option, with its spellings."""

    key: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str | None = None
    env_name: str | None = None  # the variable's name after the prefix (default: KEY upper-cased)
    const: str | None = None  # the value of the bare flag (``--local-allow-root`` = ``true``); None: a value is needed

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    def env(self, prefix: str) -> str:
        return prefix + (self.env_name or self.key.upper())


def add_options(parser: argparse.ArgumentParser, options, prefix: str) -> None:
    for option in options:
        default = option.default
        shown = f"{default[0]}-{default[1]}" if isinstance(default, tuple) and len(default) == 2 else default
        suffix = f"; default: {shown}" if default not in (None, (), "") else ""
        extra = {"nargs": "?", "const": option.const} if option.const is not None else {}
        parser.add_argument(option.flag, dest=option.key, default=None, metavar=option.metavar,
                            help=f"{option.help} (env: {option.env(prefix)}{suffix})", **extra)


def resolve(options, args: argparse.Namespace, env: Mapping[str, str], prefix: str,
            file_values: Mapping[str, Any] | None = None, file_label: str = "") -> dict[str, Any]:
    """Each option from its flag, else its variable, else the file, else its default."""
    values: dict[str, Any] = {}
    for option in options:
        raw, source = getattr(args, option.key), option.flag
        if raw is None and env.get(option.env(prefix), "").strip():
            raw, source = env[option.env(prefix)], option.env(prefix)
        if raw is None and file_values and option.key in file_values:
            raw, source = file_values[option.key], f"{option.key} in {file_label}"
        if raw is None:
            values[option.key] = option.default
            continue
        try:
            values[option.key] = option.parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: {exc} (got {raw!r})") from None
    return values


# --- value parsers ----------------------------------------------------------------------------------

def parse_url(text: Any) -> str:
    value = str(text).strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL such as http://127.0.0.1:8091")
    return value


def parse_name(text: Any) -> str:
    value = str(text).strip()
    if not NAME_RE.fullmatch(value):
        raise ValueError("1-64 characters of [A-Za-z0-9._-]")
    return value


def parse_host(text: Any) -> str:
    value = str(text).strip()
    if not value or len(value) > 128 or any(c.isspace() for c in value):
        raise ValueError("expected a host name or address")
    return value


def parse_port_range(text: Any) -> tuple[int, int]:
    if isinstance(text, (list, tuple)) and len(text) == 2:
        low, high = text
    else:
        match = re.fullmatch(r"\s*(\d+)\s*[-:]\s*(\d+)\s*", str(text))
        if not match:
            raise ValueError("expected LOW-HIGH such as 30000-31000")
        low, high = match.groups()
    low, high = int(low), int(high)
    if not 1 <= low <= high <= 65535:
        raise ValueError("expected 1 <= LOW <= HIGH <= 65535")
    return low, high


def parse_seconds(text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError("expected a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("expected a positive number of seconds")
    return value


def parse_bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def parse_log_format(text: Any) -> str:
    value = str(text).strip().lower()
    if value not in ("plain", "json"):
        raise ValueError("expected plain or json")
    return value


def parse_log_level(text: Any) -> str:
    value = str(text).strip().upper()
    if value not in LOG_LEVELS:
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value
