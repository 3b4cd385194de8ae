"""Adding a message field is adding one record to `sendguard.fields.FIELDS`: the header reader,
the config's `headers:` sources, the JSON payload, the ESP endpoints' `sendguard_*` keys, the
store's codec and the API's views all follow. The record is added before the rest of sendguard
is imported, as a built-in field is (in a fresh interpreter, since the derived models are built
at import)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    from datetime import UTC, datetime

    from sendguard.fields import FIELDS, Field

    def _priority(text: str, field: str) -> int:
        from sendguard.errors import InvalidMessage
        if not text.strip().isdigit():
            raise InvalidMessage(f"{field}: {text!r} is not a number", field=field)
        return int(text)

    # The one place: a record in the table.
    PRIORITY: Field[int | None] = Field("priority", ("X-Sendguard-Priority",), _priority, None)
    FIELDS.append(PRIORITY)

    from sendguard.config import parse_config
    from sendguard.errors import InvalidMessage
    from sendguard.fields import read_fields
    from sendguard.headers import Headers
    from sendguard.ingress.payloads import field_overrides, validate_as, SendPayload
    from sendguard.ingress.views import message_view
    from sendguard.message import Message
    from sendguard.store.codec import dump_fields, load_fields

    # Read from a header, from its default source and from one the config names.
    fields = read_fields(Headers((("X-Sendguard-Priority", "3"),)), {})
    assert fields.get(PRIORITY) == 3, fields
    settings = parse_config("headers: {priority: [X-Prio]}", "test")
    sources = settings.config.headers.sources()
    assert sources["priority"] == ["X-Prio"] and sources["campaign"][0] == "X-Sendguard-Campaign"
    assert read_fields(Headers((("X-Prio", "5"),)), sources).get(PRIORITY) == 5
    try:
        read_fields(Headers((("X-Prio", "soon"),)), sources)
    except InvalidMessage as exc:
        assert exc.field == "X-Prio", exc.field
    else:
        raise AssertionError("a bad value must be refused")

    # From JSON, replacing what the headers say.
    payload = validate_as(SendPayload, {"from": "a@example.com", "to": ["b@example.org"],
                                        "priority": "7", "campaign": "spring"})
    overridden = field_overrides(payload).apply(fields)
    assert overridden.get(PRIORITY) == 7 and overridden.campaign == "spring", overridden

    # Stored and loaded back; a row stored before the field existed takes its default.
    assert load_fields(dump_fields(overridden)) == overridden
    assert load_fields('{"campaign": "old"}').get(PRIORITY) is None

    # Shown in the API's message view.
    message = Message("m1", datetime(2026, 1, 1, tzinfo=UTC), "http", "a@example.com",
                      ("b@example.org",), Headers(()), overridden)
    view = message_view(message)
    assert view["priority"] == 7 and view["campaign"] == "spring", view

    # Accepted by the ESP endpoints as sendguard_priority (custom_args, Metadata, v:).
    from sendguard.ingress.esp.mapping import sendguard_fields
    [(header, value, _)] = sendguard_fields({"sendguard_priority": "2"}, "custom_args")
    assert (header, value) == ("X-Sendguard-Priority", "2"), header
    print("ok")
    """
)


def test_a_field_added_in_one_place_is_read_stored_and_shown() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
