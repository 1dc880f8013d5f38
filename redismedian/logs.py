"""Logging set-up: one logger per module, lines a person can read at a glance (or JSON for shippers).

Whatever the format, every line goes through :func:`redact`: passwords registered with
:func:`add_secret` and any ``scheme://user:password@`` in the text come out as ``***``.  And every
message goes through :func:`redismedian.text.shown` (no limit below :data:`redismedian.text.LINE`):
a control character in it (text from Redis the caller did not escape already) is escaped, so a
message is always one line and never a terminal escape.  A traceback keeps its lines.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import IO, Any

from .text import LINE, shown

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

_SECRETS: set[str] = set()
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@\s/]+@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&\s]+", re.IGNORECASE)


def add_secret(secret: str | None) -> None:
    """Never show ``secret`` in a log line (short strings are ignored: they would mangle text)."""
    if secret and len(secret) >= 4:
        _SECRETS.add(secret)


def redact(text: str) -> str:
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    text = _QUERY_PASSWORD.sub(r"\1***", text)
    for s in _SECRETS:
        if s in text:
            text = text.replace(s, "***")
    return text


def _escaped(record: logging.LogRecord) -> logging.LogRecord:
    """The record with its message escaped: a copy when that changes it (other handlers share it)."""
    message = record.getMessage()
    safe = shown(message, LINE)
    if safe == message:
        return record
    return logging.makeLogRecord({**record.__dict__, "msg": safe, "args": None})


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(FORMAT, datefmt="%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(_escaped(record)))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, plus fixed fields."""

    def __init__(self, fields: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.fields = {k: v for k, v in (fields or {}).items() if v is not None}

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        doc: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": redact(shown(record.getMessage(), LINE))}
        doc.update(self.fields)
        doc["pid"] = record.process
        if record.exc_info:
            doc["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False)


def setup(level: str = "INFO", stream: IO[str] | None = None, fmt: str = "text",
          fields: dict[str, Any] | None = None) -> None:
    """Send every log line to ``stream`` (stderr) in ``fmt`` (``text`` or ``json``).

    ``fields`` (e.g. component and name) are added to every JSON line.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(fields) if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # redis-py logs nothing useful at INFO; keep third-party chatter out of the way.
    logging.getLogger("redis").setLevel(logging.WARNING)
