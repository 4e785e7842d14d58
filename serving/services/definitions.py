"""Model definitions: how a replica serves the model (docs/serving.md).

A ``custom`` endpoint reads ``model-definition.yaml`` (or ``.yml``, or the path the
create request names) from its model folder, in Backend.AI's format::

    models:
      - name: echo
        model_path: /models
        service:
          start_command: ["python3", "/opt/inference/server.py"]   # list or string; optional
          port: 8000
          health_check: {path: /health, interval: 2, max_wait_time: 2, max_retries: 3,
                         initial_delay: 0, expected_status_code: 200}

The other runtimes (``vllm``, ``huggingface-tgi``, ``nim``, ``cmd``) bring their
definition themselves: the image's own command serves on the runtime's port.

``parse_definition`` turns the text into the normalised dict stored in
``Endpoint.model_definition``::

    {"name", "model_path", "start_command": str | None, "port": int,
     "health_check": {"path", "interval", "timeout", "threshold", "initial_delay", "expected_status"}}

Every problem is an ``InvalidAPIParameters`` naming the file and the field
(``model definition (model-definition.yaml): models[0].service.port: ...``).
"""
from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

import yaml

from backendai.api import errors

log = logging.getLogger(__name__)

#: the largest definition file read (bytes)
MAX_DEFINITION_BYTES = 64 * 1024
DEFAULT_DEFINITION_NAMES = ("model-definition.yaml", "model-definition.yml")
MAX_NAME = 64
MAX_PATH = 1024
MAX_COMMAND = 64 * 1024
MAX_HEALTH_PATH = 512
#: in-container ports a kernel already uses (REPL, sshd, ttyd): never a model's port
RESERVED_PORTS = frozenset({2000, 2001, 2002, 2003, 2200, 7681})
PORT_MIN, PORT_MAX = 1, 65535

#: Backend.AI's health-check defaults (``service.health_check``), by our normalised names
HEALTH_DEFAULTS = {"interval": 10.0, "timeout": 15.0, "threshold": 10, "initial_delay": 60.0, "expected_status": 200}
#: (backend.ai field, normalised field, low, high, kind)
HEALTH_FIELDS = (
    ("interval", "interval", 0.5, 3600.0, float),
    ("max_wait_time", "timeout", 0.1, 600.0, float),
    ("max_retries", "threshold", 1, 100, int),
    ("initial_delay", "initial_delay", 0.0, 3600.0, float),
    ("expected_status_code", "expected_status", 100, 599, int),
)


@dataclass(frozen=True)
class Runtime:
    name: str
    human_readable_name: str
    #: the port the image serves on (None: the image's inference service port, for ``cmd``)
    port: int | None = None
    health_path: str = "/health"
    #: True: the definition file of the model folder says how to serve (``custom``)
    needs_definition: bool = False


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    Runtime("custom", "Custom (Default)", needs_definition=True),
    Runtime("vllm", "vLLM", port=8000, health_path="/health"),
    Runtime("huggingface-tgi", "Huggingface TGI", port=3000, health_path="/info"),
    Runtime("nim", "NVIDIA NIM", port=8000, health_path="/v1/health/ready"),
    Runtime("cmd", "Predefined Image Command", port=None, health_path="/"),
)}
DEFAULT_RUNTIME = "custom"


def runtimes() -> list[dict]:
    """``GET /services/_/runtimes``: ``[{"name", "human_readable_name"}]``."""
    return [{"name": r.name, "human_readable_name": r.human_readable_name} for r in RUNTIMES.values()]


def check_runtime(value) -> Runtime:
    if value is None or value == "":
        return RUNTIMES[DEFAULT_RUNTIME]
    if not isinstance(value, str) or value not in RUNTIMES:
        shown = value[:40] if isinstance(value, str) else type(value).__name__
        raise errors.InvalidAPIParameters(
            f"runtime_variant: unknown runtime {shown!r} (known: {', '.join(RUNTIMES)})")
    return RUNTIMES[value]


class _Problem(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _error(source: str, field: str, message: str) -> errors.BackendAIError:
    exc = errors.InvalidAPIParameters(f"model definition ({source}): {field}: {message}")
    exc.field = "model_definition"
    return exc


def _text(value, field: str, max_length: int, *, required: bool = True) -> str | None:
    if value is None:
        if required:
            raise _Problem(field, "is required")
        return None
    if not isinstance(value, str):
        raise _Problem(field, f"must be a string, not {type(value).__name__}")
    if required and not value.strip():
        raise _Problem(field, "must not be empty")
    if "\x00" in value:
        raise _Problem(field, "must not contain NUL characters")
    if len(value) > max_length:
        raise _Problem(field, f"must be at most {max_length} characters")
    return value


def _number(value, field: str, low, high, kind):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Problem(field, f"must be a number, not {type(value).__name__}")
    if kind is int and (isinstance(value, float) and not value.is_integer()):
        raise _Problem(field, "must be a whole number")
    if value != value or not low <= value <= high:
        raise _Problem(field, f"must be between {low} and {high}")
    return kind(value)


def check_port(value, field: str = "port") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Problem(field, f"must be an integer port number, not {type(value).__name__}")
    if not PORT_MIN <= value <= PORT_MAX:
        raise _Problem(field, f"must be between {PORT_MIN} and {PORT_MAX}")
    if value in RESERVED_PORTS:
        raise _Problem(field, f"{value} is reserved in the container ({', '.join(map(str, sorted(RESERVED_PORTS)))})")
    return value


def _command(value, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        if not value:
            raise _Problem(field, "must not be an empty list")
        for idx, part in enumerate(value):
            if not isinstance(part, str):
                raise _Problem(f"{field}[{idx}]", f"must be a string, not {type(part).__name__}")
            if "\x00" in part:
                raise _Problem(f"{field}[{idx}]", "must not contain NUL characters")
        command = shlex.join(value)
    elif isinstance(value, str):
        if "\x00" in value:
            raise _Problem(field, "must not contain NUL characters")
        command = value.strip()
        if not command:
            raise _Problem(field, "must not be empty")
    else:
        raise _Problem(field, f"must be a list of strings or a string, not {type(value).__name__}")
    if len(command) > MAX_COMMAND:
        raise _Problem(field, f"must be at most {MAX_COMMAND} characters")
    return command


def _health_path(value, field: str) -> str:
    path = _text(value, field, MAX_HEALTH_PATH)
    if not path.startswith("/") or any(ch.isspace() or ord(ch) < 0x20 for ch in path):
        raise _Problem(field, "must be a URL path starting with '/' (no spaces)")
    return path


def health_check(data, field: str = "health_check", *, default_path: str = "/") -> dict:
    """A normalised health check from Backend.AI's ``service.health_check`` (None: the defaults)."""
    result = {"path": default_path, **HEALTH_DEFAULTS}
    if data is None:
        return result
    if not isinstance(data, dict):
        raise _Problem(field, f"must be a mapping, not {type(data).__name__}")
    if "path" in data:
        result["path"] = _health_path(data["path"], f"{field}.path")
    for source, target, low, high, kind in HEALTH_FIELDS:
        if data.get(source) is not None:
            result[target] = _number(data[source], f"{field}.{source}", low, high, kind)
    return result


def normalise(data) -> dict:
    """The normalised definition of a parsed document (raises ``_Problem``)."""
    if not isinstance(data, dict):
        raise _Problem("(top level)", "must be a mapping with a 'models' list")
    models = data.get("models")
    if models is None:
        raise _Problem("models", "is required (a list with one model)")
    if not isinstance(models, list) or not models:
        raise _Problem("models", "must be a non-empty list")
    model = models[0]
    if not isinstance(model, dict):
        raise _Problem("models[0]", f"must be a mapping, not {type(model).__name__}")
    name = _text(model.get("name"), "models[0].name", MAX_NAME)
    model_path = _text(model.get("model_path"), "models[0].model_path", MAX_PATH)
    if not model_path.startswith("/"):
        raise _Problem("models[0].model_path", "must be an absolute path in the container")
    if ".." in PurePosixPath(model_path).parts:
        raise _Problem("models[0].model_path", "must not contain '..'")
    service = model.get("service")
    if service is None:
        raise _Problem("models[0].service", "is required (port, start_command, health_check)")
    if not isinstance(service, dict):
        raise _Problem("models[0].service", f"must be a mapping, not {type(service).__name__}")
    if "port" not in service:
        raise _Problem("models[0].service.port", "is required")
    port = check_port(service["port"], "models[0].service.port")
    command = _command(service.get("start_command"), "models[0].service.start_command")
    check = health_check(service.get("health_check"), "models[0].service.health_check")
    return {"name": name, "model_path": model_path, "start_command": command, "port": port, "health_check": check}


def parse_definition(text, *, source: str = "model-definition.yaml") -> dict:
    """Parse and validate a definition file's text (str or bytes, at most ``MAX_DEFINITION_BYTES``)."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    if not isinstance(text, (bytes, bytearray)):
        raise _error(source, "(file)", "must be text")
    if len(text) > MAX_DEFINITION_BYTES:
        raise _error(source, "(file)", f"is larger than {MAX_DEFINITION_BYTES} bytes")
    try:
        decoded = bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise _error(source, "(file)", "is not UTF-8 text") from None
    if not decoded.strip():
        raise _error(source, "(file)", "is empty")
    try:
        data = yaml.safe_load(decoded)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid syntax"
        raise _error(source, "(file)", f"is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise _error(source, "(file)", "is nested too deeply") from None
    try:
        return normalise(data)
    except _Problem as exc:
        raise _error(source, exc.field, exc.message) from None


def preset_definition(runtime: Runtime, image) -> dict:
    """The definition of a runtime that brings its own (the image's command serves)."""
    port = runtime.port
    if port is None:  # cmd: the image's inference service port (or its first http one)
        ports = list(getattr(image, "service_ports", None) or [])
        chosen = next((p for p in ports if p.get("protocol") == "inference"), None) \
            or next((p for p in ports if p.get("protocol") in ("http", "preopen")), None)
        if chosen is None or not chosen.get("container_ports"):
            raise errors.InvalidAPIParameters(
                f"runtime_variant: the image {image.name} declares no inference service port "
                "(label ai.backend.service-ports), so the 'cmd' runtime cannot serve it")
        port = int(chosen["container_ports"][0])
    return {"name": runtime.name, "model_path": "/models", "start_command": None, "port": port,
            "health_check": {**HEALTH_DEFAULTS, "path": runtime.health_path}}


def clean_definition_path(value) -> str:
    """``model_definition_path`` as the request gives it: a relative path in the model folder ('' = default)."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise errors.InvalidAPIParameters("config.model_definition_path: must be a string")
    if "\x00" in value or len(value) > MAX_PATH or "\\" in value:
        raise errors.InvalidAPIParameters("config.model_definition_path: must be a path of at most "
                                          f"{MAX_PATH} characters in the model folder")
    parts = [p for p in PurePosixPath(value.lstrip("/")).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        raise errors.InvalidAPIParameters("config.model_definition_path: must be a file path inside the model folder")
    return "/".join(parts)


def load_definition(folder, definition_path: str = "") -> dict:
    """Read and validate the definition file of a model folder (through its storage proxy)."""
    from vfolders.services.transfers import read_file

    candidates = [definition_path] if definition_path else list(DEFAULT_DEFINITION_NAMES)
    for idx, path in enumerate(candidates):
        try:
            data = read_file(folder, path, MAX_DEFINITION_BYTES)
        except errors.PayloadTooLarge:
            raise _error(path, "(file)", f"is larger than {MAX_DEFINITION_BYTES} bytes") from None
        except errors.ObjectNotFound:
            if idx + 1 < len(candidates):
                continue
            shown = " or ".join(candidates)
            raise errors.InvalidAPIParameters(
                f"model definition: the model folder {folder.name!r} has no {shown}"
                + ("" if definition_path else " (or give config.model_definition_path, or another runtime_variant)")
            ) from None
        return parse_definition(data, source=path)
    raise AssertionError("unreachable")
