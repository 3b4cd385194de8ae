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
and a caller lookup per line: a `decision` line is written for every delivery. With JSON lines
the bound logger's level methods build the event dict, render and write it in one call
(`_line`), as structlog's chain would, while that chain is the one configured here.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

# structlog imports rich (with attrs and pygments), when it is installed, for its console
# renderer's default traceback formatter: 6 % of the instructions of a server start where
# another tool brought rich in (the test extras do, through schemathesis and pip-audit).
# sendguard's console lines print tracebacks as plain text whatever is installed (`configure`),
# so the first import of structlog, which is this one when `serve` or `check-config` runs,
# finds rich absent, as in a runtime-only install; rich stays importable for anyone else.
_HIDE_RICH = "rich" not in sys.modules and "structlog" not in sys.modules
if _HIDE_RICH:
    sys.modules["rich"] = None  # type: ignore[assignment]  # None: an import raises ImportError
try:
    import structlog
finally:
    if _HIDE_RICH:
        del sys.modules["rich"]
from structlog.typing import EventDict, Processor, WrappedLogger  # noqa: E402 (after the above)

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


_PREFIX = structlog.contextvars.STRUCTLOG_KEY_PREFIX
_PREFIX_LEN = len(_PREFIX)


def _line(logger: Any, method_name: str, event: Any, event_kw: dict[str, Any]) -> None:
    """What structlog's `_process_event` makes of a call on the chain `merge_contextvars`,
    `_json_line`, and the write `_Lines` then does, in one call: the same event dict in the
    same order (the bound context, the call's fields, `event`, then the context variables not
    already there, in the context's own order), the same line. A line is written for every
    message and every decision; the generic path costs a copy and an update of the dict, two
    calls of the chain, the type checks of its result and a `getattr` of the level method."""
    context = logger._context
    if context:
        event_dict = context.copy()
        event_dict.update(event_kw)
    else:  # nothing bound on the logger (as in sendguard): the call's own fields are the dict
        event_dict = event_kw
    if event is not None:
        event_dict["event"] = event
    for var, value in contextvars.copy_context().items():
        if value is not Ellipsis and var.name.startswith(_PREFIX):
            event_dict.setdefault(var.name[_PREFIX_LEN:], value)
    wrapped = logger._logger
    wrapped._write(_json_line(wrapped, method_name, event_dict))


_OWN_LENGTH = 2  # the chain `configure` sets for JSON lines: merge_contextvars, _json_line


def _own(logger: Any) -> bool:
    """Whether `logger` still has the chain and the logger `configure` set for JSON lines
    (`structlog.testing.capture_logs` swaps the chain's processors in place, and a reconfigured
    factory makes other loggers: both must take structlog's own path)."""
    processors = logger._processors
    return (
        len(processors) == _OWN_LENGTH
        and processors[-1] is _json_line
        and processors[0] is structlog.contextvars.merge_contextvars
        and type(logger._logger) is _Lines
    )


def _proxy_to_logger(self: Any, method_name: str, event: str | None = None, **event_kw: Any) -> Any:
    """`BoundLoggerBase._proxy_to_logger` (which `log()` and the async methods call), straight
    through `_line` while the chain is sendguard's own."""
    if _own(self):
        _line(self, method_name, event, event_kw)
        return None
    return structlog.BoundLoggerBase._proxy_to_logger(self, method_name, event, **event_kw)


def _level_method(name: str, generic: Any) -> Any:
    """The method `name` (`info`, ...) of an enabled level: what structlog's filtering logger
    does (%-interpolation of positional arguments, then `_proxy_to_logger`) without its two
    calls and two copies of the fields when there is nothing to interpolate."""

    def method(self: Any, event: str, *args: Any, **kw: Any) -> Any:
        if args or not _own(self):
            return generic(self, event, *args, **kw)
        _line(self, name, event, kw)
        return None

    method.__name__ = name
    return method


_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_ALIASES = {"msg": "info", "warn": "warning", "fatal": "critical"}


def _json_wrapper(level: int) -> type[Any]:
    """structlog's filtering bound logger of `level`, its enabled level methods writing sendguard's
    JSON lines in one call (`exception`, `log`, `is_enabled_for` and the rest are structlog's)."""
    base = structlog.make_filtering_bound_logger(level)
    methods: dict[str, Any] = {"_proxy_to_logger": _proxy_to_logger}
    for name, number in _METHOD_LEVELS.items():
        if number >= level:
            methods[name] = _level_method(name, getattr(base, name))
    for alias, name in _ALIASES.items():
        if name in methods:
            methods[alias] = methods[name]
    return type(base.__name__, (base,), methods)


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
        # The console renderer prints the traceback itself, after the line, as plain text
        # (whether rich is installed or not: see the import of structlog above).
        [structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)]
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
    wrapper = (
        structlog.make_filtering_bound_logger(_LEVELS[level])
        if console
        else _json_wrapper(_LEVELS[level])
    )
    structlog.configure(
        processors=own,
        wrapper_class=wrapper,
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
