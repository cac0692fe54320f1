"""Structured logs: one JSON object per line, with the request id of the call being served.

The id comes from the caller's `x-request-id` metadata (or is made up when absent or unusable), is
set for the duration of the call by the RPC interceptor, and appears on every record logged
meanwhile, so one grep follows a transmission from the partner's client through the relay here.
In a traced process (service_kit/tracing.py) the id is the trace id unless the caller sent
its own, in which case a line logged while a span is current names the trace id too (`trace_id`).
"""
from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import uuid
from typing import Any

from opentelemetry import trace

REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("ecert_request_id", default="")

# LogRecord attributes that are not the caller's `extra=` fields.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName", "request_id"}


def accept_request_id(incoming: str | None) -> str:
    """The caller's id if it is a sane token (it ends up in logs), else a fresh one."""
    if incoming and REQUEST_ID_PATTERN.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


# What json.dumps(entry, default=str, ensure_ascii=False) would make afresh for every line.
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    # The last second written, and its text up to the seconds: most lines share it with the one before.
    _second: tuple[dt.datetime | None, str] = (None, "")

    def _timestamp(self, created: float) -> str:
        """The instant as isoformat(timespec="milliseconds") in UTC writes it."""
        at = dt.datetime.fromtimestamp(created, dt.timezone.utc)
        second = at.replace(microsecond=0)
        known, text = self._second
        if second != known:
            text = second.isoformat()[:-6]  # up to the seconds, without the "+00:00"
            self._second = (second, text)
        return f"{text}.{at.microsecond // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # The interceptor names it on its own line; any other record logged during a call gets the call's
        # (handlers format in the logging thread, which is the one serving the call).
        request_id = getattr(record, "request_id", "") or request_id_var.get()
        span_context = trace.get_current_span().get_span_context()
        trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else ""
        if request_id or trace_id:
            entry["request_id"] = request_id or trace_id
        if trace_id and trace_id != entry["request_id"]:  # the caller named its own request id
            entry["trace_id"] = trace_id
        for key, value in vars(record).items():  # the caller's extra= fields
            if key not in _STANDARD and key[:1] != "_":
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)


class _SimulatedClock(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.clock = "simulated"
        return True


def mark_simulated_clock() -> None:
    """Every line from now on says the service's clock is simulated (a field `clock`, or a text tag)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _SimulatedClock) for f in handler.filters):
            handler.addFilter(_SimulatedClock())
            if not isinstance(handler.formatter, JsonFormatter):
                handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [clock %(clock)s] %(name)s %(message)s"))


def configure(level: int | str = logging.INFO, *, json_format: bool = True) -> None:
    """Root logging for a process (`ecert serve`, the relay): JSON lines on stderr, or plain text."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic reports each migration it runs at INFO (kept, in this format); the plugins it sets up on
    # every start are noise unless one asks for DEBUG.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
