"""Logging: readable lines by default, one JSON object per line with CARS_LOG_JSON=1."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}
_SECRET_HINTS = ("password", "token", "secret")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    out = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD:
            continue
        out[key] = "***" if any(h in key.lower() for h in _SECRET_HINTS) else value
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
            "logger": record.name, "msg": record.getMessage(), **_extras(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def configure(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    text = TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler.setFormatter(JsonFormatter() if as_json else text)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # FastStream logs every message at INFO; keep that for DEBUG runs only.
    logging.getLogger("faststream").setLevel(max(logging.getLevelName(level), logging.WARNING))
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
