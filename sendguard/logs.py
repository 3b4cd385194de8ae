"""Structured logs: JSON lines when not on a terminal, readable console output when on one.

sendguard's own events and the standard library's records (aiosmtpd logs to `mail.log`,
aiohttp to `aiohttp.*`, asyncio and `warnings` to theirs) leave through one handler whose
structlog `ProcessorFormatter` renders them alike: with `log.format: json` every line is one
JSON object with `event`, `level`, `timestamp` and `logger`, and an exception's traceback is
the `exception` field, never lines of plain text.

Event names are constants ("policy failed", "accepted"); the values go in fields. Every
ingress binds `message_id` (and the dispatcher `delivery_id`) with structlog's contextvars, so
every line logged while handling a message carries them.

sendguard's own lines do not pass through the standard library's logging: structlog renders
them and writes them to the handler's stream under the handler's lock (one write per line, as
the handler does), which costs a fraction of a `LogRecord`, its copy in `ProcessorFormatter`
and a caller lookup per line: a `decision` line is written for every delivery.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

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


# The level a structlog method name stands for (as structlog's `add_log_level` maps them).
_LEVEL_OF = {"warn": "warning", "exception": "error", "fatal": "critical", "msg": "info"}


def _fallback(value: Any) -> Any:
    """What orjson cannot serialise: its `__structlog__()` if it has one, else its repr (as
    structlog's JSONRenderer does)."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


_second: tuple[int, str] = (-1, "")
"""The last second a timestamp was made in, and its text (one tuple: threads log too)."""


def _timestamp() -> str:
    """Now as `datetime.now(UTC).isoformat()` writes it, `Z` for `+00:00`.

    isoformat formats every field with printf for each line (about 11,000 instructions,
    a fifth of a line's cost); here the text of the second is made once per second and
    the microseconds are added to it. Both read the system clock rounded down to the
    microsecond, and without microseconds isoformat writes none, as here.
    """
    global _second  # noqa: PLW0603 - the cache of one process
    micros = time.time_ns() // 1000
    second, fraction = divmod(micros, 1_000_000)
    cached = _second
    if cached[0] != second:
        cached = _second = (
            second,
            datetime.fromtimestamp(second, UTC).isoformat().removesuffix("+00:00"),
        )
    return f"{cached[1]}.{fraction:06d}Z" if fraction else f"{cached[1]}Z"


def _json_line(logger: Any, method_name: str, event_dict: EventDict) -> str:
    """One processor for sendguard's own JSON lines: `logger`, `level`, `timestamp` (ISO, UTC),
    the traceback as `exception`, rendered by orjson. The same as structlog's add_logger_name,
    add_log_level, TimeStamper(fmt="iso", utc=True), format_exc_info and JSONRenderer in a row,
    in one call instead of five: this runs for every decision."""
    event_dict["logger"] = logger.name
    event_dict["level"] = _LEVEL_OF.get(method_name, method_name)
    event_dict["timestamp"] = _timestamp()
    if "exc_info" in event_dict:
        event_dict = structlog.processors.format_exc_info(logger, method_name, event_dict)
    return orjson.dumps(event_dict, default=_fallback).decode()


class _Lines:
    """A structlog logger writing each rendered line to the stream of `handler`, under its lock
    (as the handler writes the libraries' lines): every level method is the same write, since
    the filtering bound logger has already decided what to log."""

    def __init__(self, name: str, handler: logging.StreamHandler[TextIO]) -> None:
        self.name = name  # `add_logger_name` reads it
        self._handler = handler

    def _write(self, line: str) -> None:
        handler = self._handler
        handler.acquire()
        try:
            stream = handler.stream
            stream.write(line + "\n")
            if not getattr(stream, "line_buffering", False):  # else the newline flushed it
                stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: a log line must not fail a send
            pass
        finally:
            handler.release()

    debug = info = msg = warning = warn = error = exception = critical = fatal = _write


class _LinesFactory:
    """Makes the `_Lines` logger of each `structlog.get_logger(name)`."""

    def __init__(self, handler: logging.StreamHandler[TextIO]) -> None:
        self._handler = handler

    def __call__(self, *args: Any) -> _Lines:
        return _Lines(str(args[0]) if args else "sendguard", self._handler)


def configure(level: str = "info", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    """Set up structlog and the standard library's logging for the process (once, by the CLI)."""
    console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
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
    own: list[Processor] = (
        [*shared, *renderer]
        if console
        else [structlog.contextvars.merge_contextvars, _json_line]  # the same, in one call
    )
    structlog.configure(
        processors=own,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_LinesFactory(handler),
        cache_logger_on_first_use=True,
    )
    # The libraries' records: rendered alike by structlog's formatter on the same stream.
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
