"""The resend check's parts: the key, the config key, retention, and the intake and engine
deciding a retransmission over a real SQLite store (sendguard/resend.py)."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

import pytest

from sendguard.approvals import GlobalPause
from sendguard.config import parse_config
from sendguard.engine import PolicyBinding
from sendguard.errors import ConfigError
from sendguard.intake import Intake
from sendguard.message import DeliveryState
from sendguard.metrics import Metrics
from sendguard.resend import (
    RESEND,
    body_digest,
    boundaries,
    client_message_id,
    is_resend,
    resend_key,
)
from sendguard.retention import Horizons
from sendguard.store.sqlite import SQLiteStore
from sendguard.testing import FakeClock
from sendguard.verdict import Action, Verdict
from tests.unit.test_engine import Scripted, engine

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
RAW = (
    b"From: shop@example.com\r\nTo: ann@example.org\r\nSubject: Your order\r\n"
    b"Message-ID: <order-1@shop.example>\r\n\r\nThanks for your order.\r\n"
)


def test_the_key_changes_with_each_part_and_only_with_them() -> None:
    key = resend_key("<a@x>", "shop@example.com", "h", "l")
    assert key == resend_key("<a@x>", "Shop@Example.com", "h", "l")  # sender compared as a key
    others = {
        resend_key("<b@x>", "shop@example.com", "h", "l"),
        resend_key("<a@x>", "news@example.com", "h", "l"),
        resend_key("<a@x>", "shop@example.com", "h2", "l"),
        resend_key("<a@x>", "shop@example.com", "h", "l2"),
        resend_key("<a@x>", "", "h", "l"),  # the null sender
        resend_key("<a@x>", "shop@example.com", "h", "l", b"?token=2"),  # the body
    }
    assert key not in others and len(others) == 6
    assert resend_key("<a@x>", "", "h", "l", b"x") == resend_key("<a@x>", "", "h", "l", b"x")
    # Parts are kept apart: moving a character from one to the next is another key.
    assert resend_key("<a@x>", "", "ab", "c") != resend_key("<a@x>", "", "a", "bc")
    assert -(2**63) <= key < 2**63  # fits SQLite's INTEGER and PostgreSQL's BIGINT


def test_a_message_id_is_the_client_s_text_without_blanks_around() -> None:
    assert client_message_id(" <a@x>\r\n ") == "<a@x>"
    assert client_message_id("") is None
    assert client_message_id("  ") is None
    assert client_message_id(None) is None


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml")
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("", timedelta(hours=24)),
        ("smtp: {resend_window: 0}", timedelta(0)),
        ("smtp: {resend_window: '0'}", timedelta(0)),
        ("smtp: {resend_window: 0s}", timedelta(0)),
        ("smtp: {resend_window: 5d}", timedelta(days=5)),
        ("smtp: {resend_window: 1m}", timedelta(minutes=1)),
    ],
)
def test_the_window_is_a_duration_or_0(text: str, window: timedelta) -> None:
    assert parse_config(text, "test.yaml").config.smtp.resend_window == window


@pytest.mark.parametrize("value", ["30s", "31d", "-1h", "1", "soon"])
def test_a_window_out_of_range_is_an_error_naming_the_key(value: str) -> None:
    (problem,) = _problems(f"smtp: {{resend_window: '{value}'}}")
    assert problem.startswith("smtp.resend_window: "), problem
    if value in ("30s", "31d"):
        assert "set 0 to turn the resend check off, or a window between 1m and 30d" in problem


def test_deliveries_are_kept_at_least_the_window() -> None:
    day = timedelta(days=1)
    assert Horizons.of(day, [], resend_window=7 * day).deliveries == 7 * day
    assert Horizons.of(90 * day, [], resend_window=day).deliveries == 90 * day
    assert Horizons.of(day, []).deliveries == day


def _intake(
    store: SQLiteStore, clock: FakeClock, window: timedelta = timedelta(hours=24)
) -> tuple[Intake, Scripted]:
    """An intake with the resend `window` whose one policy forwards and counts its calls."""
    policy = Scripted(Verdict.forward("counted"))
    decides = engine(store, PolicyBinding("counting", policy), clock=clock)
    intake = Intake(decides, store, clock, Metrics(), {}, lambda: None, "t.example", None, window)
    return intake, policy


async def test_a_copy_within_the_window_is_dropped_before_any_policy(store: SQLiteStore) -> None:
    clock = FakeClock(T0)
    intake, policy = _intake(store, clock)
    first = await intake.accept(RAW, "shop@example.com", ["ann@example.org"], "smtp", resend=True)
    assert policy.calls == 1
    clock.advance(timedelta(hours=23))
    again = await intake.accept(RAW, "shop@example.com", ["Ann@example.org"], "smtp", resend=True)

    (dropped,) = again.deliveries
    assert dropped.state is DeliveryState.DROPPED and again.all_dropped
    assert policy.calls == 1  # no policy judged the copy
    assert [o.policy for o in dropped.decision.outcomes] == [RESEND]
    assert is_resend(dropped.decision) and not is_resend(first.deliveries[0].decision)
    assert dropped.reason == (
        f"resend: a copy of message {first.message.id} (Message-ID <order-1@shop.example>)"
        " accepted at 2026-12-03 09:00 UTC: the client sent it again; not sent twice"
    )
    # The dropped copy counts too (any state): a day after the first, within the window of
    # the second, a third try is still a copy; past the window of both, a message of its own.
    clock.advance(timedelta(hours=2))
    third = await intake.accept(RAW, "shop@example.com", ["ann@example.org"], "smtp", resend=True)
    assert third.deliveries[0].state is DeliveryState.DROPPED
    clock.advance(timedelta(hours=24, seconds=1))
    later = await intake.accept(RAW, "shop@example.com", ["ann@example.org"], "smtp", resend=True)
    assert later.deliveries[0].state is DeliveryState.QUEUED


async def test_a_copy_is_dropped_while_sending_is_paused(store: SQLiteStore) -> None:
    # The first copy waits for the resume; the second must not be released with it.
    clock = FakeClock(T0)
    intake, _ = _intake(store, clock)
    await store.set_pause(GlobalPause(True, T0, "ops", "incident"))
    first = await intake.accept(RAW, "shop@example.com", ["ann@example.org"], "smtp", resend=True)
    again = await intake.accept(RAW, "shop@example.com", ["ann@example.org"], "smtp", resend=True)
    assert first.deliveries[0].state is DeliveryState.HELD
    assert again.deliveries[0].decision.verdict.action is Action.DROP


async def test_only_a_resend_capable_ingress_with_a_window_is_checked(store: SQLiteStore) -> None:
    clock = FakeClock(T0)
    intake, _ = _intake(store, clock)
    for _ in range(2):  # HTTP and ESP sends have Idempotency-Key: not checked here
        sent = await intake.accept(RAW, "shop@example.com", ["ann@example.org"], "http")
        assert sent.deliveries[0].state is DeliveryState.QUEUED
    off, _ = _intake(store, clock, timedelta(0))
    for _ in range(2):
        sent = await off.accept(RAW, "shop@example.com", ["bo@example.org"], "smtp", resend=True)
        assert sent.deliveries[0].state is DeliveryState.QUEUED
    # Without a Message-ID of the client's, each message is new (sendguard stamps its own).
    bare = RAW.replace(b"Message-ID: <order-1@shop.example>\r\n", b"")
    for _ in range(2):
        sent = await intake.accept(
            bare, "shop@example.com", ["cy@example.org"], "smtp", resend=True
        )
        assert sent.deliveries[0].state is DeliveryState.QUEUED


def _multipart(outer: str, inner: str, text: str = "Hello Ann") -> bytes:
    return (
        f'--{outer}\r\nContent-Type: multipart/alternative;\r\n boundary="{inner}"\r\n\r\n'
        f"--{inner}\r\nContent-Type: text/plain\r\n\r\n{text}\r\n"
        f"--{inner}\r\nContent-Type: text/html\r\n\r\n<p>{text}</p>\r\n--{inner}--\r\n"
        f"--{outer}\r\nContent-Type: image/png\r\n\r\niVBORw0K\r\n--{outer}--\r\n"
    ).encode()


MIXED = "multipart/mixed; boundary={}"


def test_a_multipart_built_again_with_new_boundaries_has_the_same_key() -> None:
    # nodemailer builds an app's retry anew: the same parts, new random boundaries.
    first = _multipart("--_NmP-aaaa-Part_1", "--_NmP-aaaa-Part_2")
    again = _multipart("--_NmP-bbbbbbbb-Part_1", "--_NmP-bbbbbbbb-Part_2")
    key = resend_key("<a@x>", "", "h", "l", first, MIXED.format('"--_NmP-aaaa-Part_1"'))
    assert key == resend_key("<a@x>", "", "h", "l", again, MIXED.format("--_NmP-bbbbbbbb-Part_1"))
    # A part that changed still tells them apart (a new code, another attachment).
    other = _multipart("--_NmP-cccc-Part_1", "--_NmP-cccc-Part_2", text="Hello Bo")
    assert key != resend_key("<a@x>", "", "h", "l", other, MIXED.format("--_NmP-cccc-Part_1"))
    # A memoryview of the body, as the intake passes it, gives the same key.
    assert key == resend_key(
        "<a@x>", "", "h", "l", memoryview(b"xx" + first)[2:], MIXED.format("--_NmP-aaaa-Part_1")
    )


def test_boundaries_are_the_messages_and_its_nested_multiparts() -> None:
    body = _multipart("outer", "inner-longer")
    assert boundaries(MIXED.format("outer"), body) == [b"inner-longer", b"outer"]
    assert boundaries("text/plain", body) == []
    assert boundaries(None, body) == []


def test_a_body_that_is_not_multipart_counts_whole_as_before() -> None:
    body = b"--x\r\nnot a part\r\n"
    assert body_digest(body, []) == (len(body), zlib.crc32(body))
    assert resend_key("<a@x>", "", "h", "l", body, "text/plain") == resend_key(
        "<a@x>", "", "h", "l", body
    )
    assert body_digest(b"a--xb--x--", [b"x"]) == (8, zlib.crc32(b"a--b----"))
