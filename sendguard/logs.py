"""Structured logs: JSON lines when not on a terminal, readable console output when on one.

sendguard's own events and the standard library's records (aiosmtpd logs to `mail.log`,
aiohttp to `aiohttp.*`, asyncio and `warnings` to theirs) leave through one handler whose
structlog `ProcessorFormatter` renders them alike: with `log.format: json` every line is one
JSON object with `event`, `level`, `timestamp` and `logger`, and an exception's traceback is
the `exception` field, never lines of plain text.

Event names are constants ("policy failed", "accepted"); the values go in fields. Every
ingress binds `message_id` (and the dispatcher `delivery_id`) with structlog's contextvars, so
every line logged while handling a message carries them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["configure"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Per-connection chatter of the libraries ("connection lost", every SMTP command line) is not
# what operators need below `debug`; their warnings and errors always get through.
_CHATTY = ("mail.log", "aiohttp.access", "aiohttp.server", "aiohttp.web", "asyncio")


def _printable(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Escape what a library copied from the wire into its message (aiosmtpd logs a TLS
    ClientHello sent to the plain port as an unrecognised command) so no raw bytes reach
    the log, whatever the renderer."""
    event = event_dict.get("event")
    if isinstance(event, str) and not event.isprintable():
        event_dict["event"] = "".join(
            c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in event
        )
    return event_dict


def _json(event: Any, **options: Any) -> str:
    """orjson for every log line: several times faster than json.dumps on these dicts."""
    default = options.get("default")
    return orjson.dumps(event, default=default).decode()


def configure(level: str = "info", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    """Set up structlog and the standard library's logging for the process (once, by the CLI)."""
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    renderer: list[Processor] = (
        # The console renderer prints the traceback itself, readably, after the line.
        [structlog.dev.ConsoleRenderer()]
        if console
        else [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_json),
        ]
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _printable],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    chatter = logging.DEBUG if level == "debug" else logging.WARNING
    for name in _CHATTY:
        logging.getLogger(name).setLevel(chatter)
    # A warning (a deprecation in a dependency, say) becomes a log line like any other.
    logging.captureWarnings(True)
