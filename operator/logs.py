"""The operator's logs: one line per record, plain for people or JSON for log collectors, and a
per-job logger that adds the job's identity to every record instead of pasting it into messages.

The identity travels in the record as `k8s_ref`, the attribute Kopf's own per-object loggers use,
so Kopf's lines about a job and Lifelong's read the same: `[namespace/name]` in plain text, an
`object` field in JSON.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

from lifelong.api import API_VERSION

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "k8s_ref", "k8s_skip"}


def _identity(record: logging.LogRecord) -> dict[str, str] | None:
    ref = getattr(record, "k8s_ref", None)
    if not isinstance(ref, dict):
        return None
    return {k: str(v) for k, v in ref.items() if v}


class PlainFormatter(logging.Formatter):
    """`[time] logger [LEVEL] [namespace/name] message`."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s] %(name)-20.20s [%(levelname)-7s] %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        ref = _identity(record)
        if ref and "name" in ref:
            where = f"{ref['namespace']}/{ref['name']}" if "namespace" in ref else ref["name"]
            prefixed = f"[{where}] {record.message}"
            record = logging.makeLogRecord({**vars(record), "message": prefixed})
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the job as `object`, and any
    `extra` fields of the call."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = _identity(record)
        if ref:
            entry["object"] = ref
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        entry.pop("settings", None)  # Kopf's per-object loggers carry their settings along
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(log_format: str, level: str) -> None:
    """Send every log record to stderr in the chosen format; Lifelong and Kopf at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.captureWarnings(True)  # a library's warning is a log line too, in the same format
    for name in ("lifelong", "kopf"):
        logging.getLogger(name).setLevel(level)
    # Kopf says "Handler ... succeeded" for every watch event; only its failures are news.
    logging.getLogger("kopf.objects").setLevel(level if level == "DEBUG" else logging.WARNING)
    # asyncio's debug chatter is noise unless the operator itself is debugged.
    logging.getLogger("asyncio").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger about one job: every record carries the job's identity."""

    def __init__(self, logger: logging.Logger, namespace: str, name: str, uid: str = "") -> None:
        ref = {"apiVersion": API_VERSION, "kind": "AutoDLJob", "namespace": namespace,
               "name": name, "uid": uid}  # fmt: skip
        super().__init__(logger, {"k8s_ref": ref, "k8s_skip": True})

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs
