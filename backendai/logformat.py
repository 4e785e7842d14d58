"""Log formats: ``plain`` (readable lines, the default) and ``json`` (one JSON object per
line, for log shippers), both carrying the request context (no Django here).

:func:`install` wraps the log record factory so that every record, ours and the
libraries', takes a snapshot of ``backendai.requestctx.current()`` when it is created
(``record.backendai_ctx``).  The formatters lift it into fields: ``request_id``,
``user_id``, ``access_key``, ``session_id``, ``agent_id``, ``kernel_id``, ...  Ids passed
with ``extra=`` take precedence over the context's.

* :class:`JsonFormatter` writes ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``,
  ``message``, the context fields, any ``extra=`` fields, and ``exc_info`` for an
  exception, as one JSON object on one line.
* :class:`PlainFormatter` writes ``<time> <LEVEL> <logger> <message>`` and, within a
  request, ``[request_id=... session_id=...]`` after the message.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter

from backendai import requestctx

__all__ = ["CTX_ATTR", "JsonFormatter", "PlainFormatter", "context_fields", "install"]

CTX_ATTR = "backendai_ctx"
FORMATS = ("plain", "json")
#: fields the plain format shows after the message (the rest stay in JSON only)
PLAIN_FIELDS = ("request_id", "user_id", "session_id", "agent_id", "kernel_id", "task")


def _ctx_record_factory(base):
    def factory(*args, **kwargs):
        record = base(*args, **kwargs)
        ctx = requestctx.current()
        setattr(record, CTX_ATTR, ctx.fields() if ctx is not None else None)
        return record
    factory.backendai_ctx_factory = True
    return factory


def install(log_format: str = "plain") -> None:
    """Snapshot the request context into every log record from now on (idempotent); in JSON
    mode Python's warnings go through logging too (a bare multi-line warning is no JSON)."""
    if log_format == "json":
        logging.captureWarnings(True)
    current = logging.getLogRecordFactory()
    if not getattr(current, "backendai_ctx_factory", False):
        logging.setLogRecordFactory(_ctx_record_factory(current))


def context_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's context fields, overridden by its own ``extra=`` ids."""
    fields = dict(getattr(record, CTX_ATTR, None) or {})
    for key in requestctx.ID_FIELDS + ("request_id", "user_id", "access_key"):
        value = record.__dict__.get(key)
        if value is not None:
            fields[key] = str(value)
    return fields


class JsonFormatter(_BaseJsonFormatter):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("timestamp", True)
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("json_ensure_ascii", False)
        super().__init__(*args or ("%(levelname)s %(name)s %(message)s",), **kwargs)

    def add_fields(self, log_data, record, message_dict):
        super().add_fields(log_data, record, message_dict)
        log_data.pop(CTX_ATTR, None)
        for key, value in context_fields(record).items():
            log_data.setdefault(key, value)
        # timestamp, level, logger, message first: a person reading the raw lines finds them
        ordered = {key: log_data.pop(key) for key in ("timestamp", "level", "logger", "message") if key in log_data}
        ordered.update(log_data)
        log_data.clear()
        log_data.update(ordered)


class PlainFormatter(logging.Formatter):
    def __init__(self, fmt: str | None = None, datefmt: str | None = None, **kwargs):
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s %(message)s", datefmt, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.name == "backendai.access":
            return text  # the access line names its request itself
        fields = context_fields(record)
        shown = " ".join(f"{key}={fields[key]}" for key in PLAIN_FIELDS if fields.get(key))
        if not shown:
            return text
        first, sep, rest = text.partition("\n")  # after the message, before a traceback
        return f"{first} [{shown}]{sep}{rest}"



def setup_daemon_logging(*, log_format: str, log_level: str, task: str, label: str, fields: dict[str, str],
                         quiet: tuple[str, ...] = ("httpx", "httpcore")) -> None:
    """Logging of a daemon outside Django (the agent, the proxy worker) on stderr.  ``json``: the
    daemon's ``fields`` (its id) on every line; ``plain``: ``[label]`` after the level.  The
    chatty client libraries in ``quiet`` log warnings and worse only."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        install("json")
        handler.setFormatter(JsonFormatter())
        requestctx.set_current(requestctx.for_task(task, via="daemon"))
        requestctx.bind(**fields)
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{label}] %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, log_level), handlers=[handler], force=True)
    for noisy in quiet:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
