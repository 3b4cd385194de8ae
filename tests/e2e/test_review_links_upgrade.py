"""A store of schema 13 (approvals of text only) upgrades to 14, on SQLite and PostgreSQL, with
its approval and messages: the old approval keeps covering its text whatever the links
(grandfathered, docs/review.md), both for a message stored before (no links recorded) that
becomes due and for a new one; other text is still held."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sendguard.clock import to_micros
from sendguard.content import content_hash
from sendguard.fields import SendguardFields
from sendguard.headers import Headers, header_end
from sendguard.store import codec
from tests.e2e.test_review_bound import reason
from tests.e2e.test_review_links import html_content, page, smtp_html
from tests.support.postgres import drop_schema_sync, postgres_at_version
from tests.support.process import SendguardProcess
from tests.support.sink import Sink
from tests.support.sqlite_versions import sqlite_at_version

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]
Start = Callable[..., SendguardProcess]

APPROVED_AT = datetime.now(UTC) - timedelta(days=3)


def schema_13_rows() -> Sequence[tuple[str, Sequence[Any]]]:
    """The campaign approved (before links were recorded) with the base page's text, and a
    message of it whose delivery was delayed and is due now."""
    content = html_content("old@example.org", page())
    fingerprint = content_hash(content)
    headers = Headers.parse(content[: header_end(content)])
    at = to_micros(APPROVED_AT)
    return (
        (
            "INSERT INTO campaigns (name, approval, paused, updated_at, updated_by)"
            " VALUES ('spring', 'approved', 0, ?, 'maria')",
            (at,),
        ),
        (
            "INSERT INTO approvals (campaign, content_hash, approved_by, approved_at)"
            " VALUES ('spring', ?, 'maria', ?)",
            (fingerprint, at),
        ),
        (
            "INSERT INTO messages (id, received_at, ingress, mail_from, recipients, headers,"
            " fields, campaign, class, size, content_hash, content) VALUES"
            " ('m-old', ?, 'smtp', 'shop@example.com', '[\"old@example.org\"]', ?, ?, 'spring',"
            " 'marketing', ?, ?, ?)",
            (
                at,
                codec.dump_headers(headers),
                codec.dump_fields(SendguardFields(campaign="spring")),
                len(content),
                fingerprint,
                content,
            ),
        ),
        (
            "INSERT INTO deliveries (id, message_id, recipient, recipient_key, domain, campaign,"
            " state, created_at, updated_at, due_at, first_state, first_reason) VALUES"
            " ('d-old', 'm-old', 'old@example.org', 'old@example.org', 'example.org', 'spring',"
            " 'delayed', ?, ?, ?, 'delayed', 'schedule: not before')",
            (at, at, at),
        ),
    )


def sqlite_schema_13(path: Any) -> None:
    sqlite_at_version(path, 13, schema_13_rows())


@pytest.fixture
def old_schema() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for schema in made:
        drop_schema_sync(schema)


def test_an_approval_from_before_links_were_recorded_still_covers_its_text(
    sendguard: Start, sink: Sink, backend: str, old_schema: list[str], tmp_path: Any
) -> None:
    policies = [{"plugin": "human_hold"}]
    if backend == "postgres":
        old_schema.append(asyncio.run(postgres_at_version(13, schema_13_rows())))
        proc = sendguard(policies=policies, store={"schema": old_schema[-1]})
    else:
        sqlite_schema_13(tmp_path / "var" / "sendguard.db")
        proc = sendguard(policies=policies)

    # stored before: no links recorded; due now, judged again, covered by the old approval
    proc.wait_states({"old@example.org": "sent"})
    # new mail with the approved text and other links: the old approval is text-only
    swapped = smtp_html(
        proc,
        "new@example.org",
        page(link='<a href="https://elsewhere.example/spring">Shop the spring sale</a>'),
    )
    proc.wait_states({"new@example.org": "sent"}, swapped)
    # other text is changed copy, as before
    other = smtp_html(proc, "other@example.org", "<p>Summer is here. See</p>")
    proc.wait_states({"other@example.org": "held"}, other)
    assert "content changed since maria approved it" in reason(proc, "other@example.org")

    # approving anew records the links with it; the old approval stays
    status, _ = proc.call("POST", "/v1/campaigns/spring/approve", {})
    assert status == 200
    proc.wait_states({"other@example.org": "sent"}, other)
    moved = smtp_html(
        proc,
        "moved@example.org",
        "<p>Summer is here. <a href='https://new.example/'>See</a></p>",
    )
    proc.wait_states({"moved@example.org": "held"}, moved)
    assert reason(proc, "moved@example.org").endswith("new link host new.example")
