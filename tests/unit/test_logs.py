"""Log event names are constants: the values of a line go in its fields, never in its name."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sendguard import logs

ROOT = Path(__file__).resolve().parents[2]
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def log_calls() -> list[tuple[str, ast.Call]]:
    """Every `log.<level>(...)` call in sendguard/ and plugins/, with where it is."""
    found = []
    for path in sorted(
        [*ROOT.joinpath("sendguard").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py")]
    ):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "log"
            ):
                found.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return found


def test_there_are_log_calls_to_check() -> None:
    assert len(log_calls()) > 10


@pytest.mark.parametrize(("where", "call"), log_calls(), ids=[w for w, _ in log_calls()])
def test_event_name_is_a_constant_phrase(where: str, call: ast.Call) -> None:
    assert call.args, f"{where}: the event name is missing"
    name = call.args[0]
    assert isinstance(name, ast.Constant) and isinstance(name.value, str), (
        f"{where}: the event name must be a string literal, not {ast.unparse(name)}"
    )
    assert len(call.args) == 1, f"{where}: values go in keyword fields, not %-arguments"
    assert not set("{}%") & set(name.value), f"{where}: {name.value!r} looks interpolated"
    assert len(name.value) <= 80, f"{where}: {name.value!r} is a sentence, not an event name"


DECIDE = """
import asyncio, json, sys
from pathlib import Path
from sendguard import logs
from sendguard.engine import Engine, PolicyBinding
from sendguard.metrics import Metrics
from sendguard.store.sqlite import SQLiteStore
from sendguard.testing import FakeClock, make_delivery
from sendguard_plugins.schedule import ScheduleOptions, SchedulePolicy
import structlog

async def main() -> None:
    logs.configure(sys.argv[1], "json")
    store = SQLiteStore(Path(sys.argv[2]))
    await store.open()
    engine = Engine(
        [PolicyBinding("schedule", SchedulePolicy(ScheduleOptions()))],
        store, FakeClock(), Metrics(),
    )
    delivery = make_delivery()
    structlog.contextvars.bind_contextvars(message_id=delivery.message.id)
    decision = await engine.decide(delivery)
    await store.close()
    print(json.dumps({
        "explained": "_explanation" in vars(decision),
        "reason": decision.explanation,
        "delivery_id": delivery.id,
    }))

asyncio.run(main())
"""


def decide_with_logs(level: str, tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    """One decision in a fresh process whose logs are configured at `level`: what the
    decision was, and the lines written to stderr."""
    done = subprocess.run(
        [sys.executable, "-c", DECIDE, level, str(tmp_path / "s.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    return json.loads(done.stdout), done.stderr.splitlines()


def test_the_decision_line_is_one_json_object_with_the_documented_fields(
    tmp_path: Path,
) -> None:
    decided, lines = decide_with_logs("info", tmp_path)
    created, *lines = lines  # the new store's line first
    assert json.loads(created)["event"] == "created"
    assert len(lines) == 1, lines
    line = json.loads(lines[0])
    assert line["event"] == "decision"
    assert (line["logger"], line["level"]) == ("sendguard.engine", "info")
    assert line["timestamp"].endswith("Z")
    assert line["delivery_id"] == decided["delivery_id"]
    assert line["message_id"]  # bound with structlog's contextvars
    assert (line["verdict"], line["reason"]) == ("forward", decided["reason"])
    assert line["reason"] == "schedule: no Not-Before"


def test_nothing_of_the_decision_line_is_built_above_info(tmp_path: Path) -> None:
    decided, lines = decide_with_logs("warning", tmp_path)
    assert lines == []
    # The explanation is worked out when first asked for: here only after the decision.
    assert decided["explained"] is False


LINES = """
import structlog
from sendguard import logs

logs.configure("info", "json")
log = structlog.get_logger("sendguard.test")
log.warn("warned", value=object.__new__(type("Odd", (), {"__repr__": lambda self: "<odd>"})))
try:
    raise ZeroDivisionError("no")
except ZeroDivisionError:
    log.exception("failed")
log.debug("not shown")
"""


def test_levels_tracebacks_and_odd_values_render_as_before() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LINES], capture_output=True, text=True, timeout=60, check=True
    )
    warned, failed = (json.loads(line) for line in done.stderr.splitlines())
    assert (warned["event"], warned["level"], warned["value"]) == ("warned", "warning", "<odd>")
    assert (failed["event"], failed["level"], failed["logger"]) == (
        "failed",
        "error",
        "sendguard.test",
    )
    assert failed["exception"].startswith("Traceback (most recent call last)")
    assert failed["exception"].endswith("ZeroDivisionError: no")
    assert "exc_info" not in failed


@pytest.mark.parametrize(
    "nanos",
    [
        1_764_664_089_018_691_123,  # microseconds and a remainder below them
        1_764_664_089_000_000_000,  # a whole second: isoformat writes no fraction
        1_764_664_089_000_000_999,  # under a microsecond past it: none either
        1_764_664_090_000_001_000,  # the next second, one microsecond in
        946_684_799_999_999_999,  # the last microsecond of 1999
        -1_000_000,  # before the epoch
    ],
)
def test_the_timestamp_is_isoformat_of_now(monkeypatch: pytest.MonkeyPatch, nanos: int) -> None:
    micros = nanos // 1000
    expected = datetime.fromtimestamp(micros // 1_000_000, UTC).replace(
        microsecond=micros % 1_000_000
    )
    monkeypatch.setattr(logs.time, "time_ns", lambda: nanos)
    for _ in range(2):  # made, then from the second kept
        assert logs._timestamp() == expected.isoformat().replace("+00:00", "Z")


SAME = """
import asyncio, json, logging, sys
import structlog
from sendguard import logs

LEVEL = sys.argv[1]
Odd = type("Odd", (), {"__repr__": lambda self: "<odd>"})


def calls():
    log = structlog.get_logger("sendguard.same")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(message_id="m1", delivery_id="d1", gone="x")
    structlog.contextvars.unbind_contextvars("gone")
    log.info("finished", state="sent", recipient="r@x", reason=None)
    log.info("decision", message_id="own", until=None, shadow=["a=hold"], n=3, f=1.5)
    log.bind(bound=1).warning("bound", message_id="own")
    bound = log.bind()
    bound.info("bound once", value=Odd())
    log.warn("warn")
    log.msg("msg")
    log.debug("debug", x=1)
    log.error("error")
    log.critical("critical")
    log.fatal("fatal")
    log.info("interpolated %s and %d", "x", 2)
    log.info("by name %(a)s", {"a": "b"})
    log.log(logging.WARNING, "by level", x=2)
    try:
        raise ZeroDivisionError("no")
    except ZeroDivisionError:
        log.exception("failed", x=1)
        log.error("failed too", exc_info=True)
    asyncio.run(log.ainfo("async", x=3))
    structlog.get_logger().info("no name")


logs.configure(LEVEL, "json")
calls()
print("---", file=sys.stderr, flush=True)
# The same calls through structlog's own wrapper, on the same chain and stream.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logs._LEVELS[LEVEL]))
calls()
"""


@pytest.mark.parametrize("level", ["debug", "info", "error"])
def test_own_lines_are_what_structlogs_chain_writes(level: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SAME, level],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    fast, generic = done.stderr.split("---\n")
    stamp = re.compile(r'"timestamp":"[^"]+"')
    assert stamp.sub("", fast) == stamp.sub("", generic)
    lines = fast.splitlines()
    # debug adds its own line and asyncio's "Using selector" (a library's, via the handler)
    assert len(lines) == {"debug": 18, "info": 16, "error": 5}[level], lines
    first = json.loads(lines[0])
    if level != "error":  # the context's own fields after the call's, unbound ones left out
        assert list(first)[:4] == ["state", "recipient", "reason", "event"]
        assert {"message_id", "delivery_id"} < first.keys()
        assert "gone" not in first


CAPTURED = """
import structlog
import structlog.testing
from sendguard import logs

logs.configure("info", "json")
log = structlog.get_logger("sendguard.captured")
log.info("before")  # the bound logger is now cached with the chain
with structlog.testing.capture_logs() as captured:
    log.info("during", x=1)
    log.warning("during %s", "too")
log.info("after")
print(captured)
"""


def test_capture_logs_still_captures_after_configure() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CAPTURED],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    assert [json.loads(line)["event"] for line in done.stderr.splitlines()] == ["before", "after"]
    assert done.stdout.strip() == (
        "[{'x': 1, 'event': 'during', 'log_level': 'info'},"
        " {'event': 'during too', 'log_level': 'warning'}]"
    )
