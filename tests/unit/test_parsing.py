"""Durations, addresses, headers and the sendguard fields read from them."""

from __future__ import annotations

import email.utils
import itertools
import re
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sendguard import address as address_module
from sendguard.address import (
    domain_of,
    recipient_key,
    remembering_valid_addresses,
    validate_address,
)
from sendguard.duration import format_duration, parse_duration
from sendguard.errors import InvalidAddress, InvalidMessage
from sendguard.fields import DEFAULT_SOURCES, parse_requirement, read_fields
from sendguard.headers import (
    Headers,
    format_date,
    header_end,
    read_incoming,
    split_message,
    stamp,
    strip_sendguard_headers,
    strip_unforwarded_headers,
)
from sendguard.ids import new_id
from sendguard.message import Match, MessageClass, OnTimeout, Requirement


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("24h", 86400),
        ("7d", 604800),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("2w", 1209600),
        (" 1 h ", 3600),
        ("1.5h", 5400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "soon", "h", "-5m", "5 minutes", "1x"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="like 90s"):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=10**9))
def test_format_duration_round_trips(millis: int) -> None:
    value = timedelta(milliseconds=millis)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    "address",
    [
        "a@example.org",
        "first.last+tag@sub.example.co.uk",
        "üser@exämple.de",
        "ÄNN@Bücher.example",
        "a%b@example.org",
    ],
)
def test_valid_addresses_pass_unchanged(address: str) -> None:
    assert validate_address(address) == address


@pytest.mark.parametrize(
    "address",
    [
        "plain",
        "@example.org",
        "a@",
        "a@@b.org",
        "a b@example.org",
        "a@exa mple.org",
        "a\r\n@example.org",
        "a\x00@example.org",
        "a@example.org\n",
        "a" * 65 + "@example.org",
        "a@" + ".".join(["d" * 63] * 5),
        "a@-x.org",
        "a@x-.org",
        "a..b@example.org",
        "a@[10.0.0.1]",
        # as strict as email-validator: each of these let one person count as several
        "x@localhost",
        "x@example",
        "x@mail.local",
        "a@example.org.",
        "a\u200b@example.org",
        "a\u00adb@example.org",
        "a@ex\u00adample.org",
        "a@exa\u200bmple.org",
        "\udcff@example.org",  # undecodable bytes from an SMTP client
    ],
)
def test_invalid_addresses_are_refused(address: str) -> None:
    with pytest.raises(InvalidAddress):
        validate_address(address)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        # RFC 5321 4.1.2 quoted local parts are taken; the key is the content, re-quoted only
        # where a dot-atom cannot say it, so one person is one key however it is written.
        ('"ann"@example.org', "ann@example.org"),
        ('"Ann.Lee"@Example.org', "ann.lee@example.org"),
        ('"a>b"@example.org', '"a>b"@example.org'),
        ('"A>B"@EXAMPLE.org', '"a>b"@example.org'),
        ('"a\\>b"@example.org', '"a>b"@example.org'),
        ('"a\\"b"@example.org', '"a\\"b"@example.org'),
        ('"quoted name"@example.org', '"quoted name"@example.org'),
        ('"a@b"@example.org', '"a@b"@example.org'),
    ],
)
def test_quoted_local_parts_are_taken_and_keyed_by_their_content(address: str, key: str) -> None:
    assert validate_address(address) == address
    assert recipient_key(address) == key


_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
_LOCALS = st.lists(
    st.text(_ATEXT + ' ."@\\<>()[],;:äß\u200b\x00', min_size=0, max_size=6)
    | st.sampled_from(["a" * 64, "b" * 65, "info", "x"]),
    min_size=1,
    max_size=4,
).map(".".join)
_SPECIAL_LABELS = [
    "xn--bcher-kva",
    "XN--zz",
    "ab--c",
    "a--b",
    "abc--d",
    "arpa",
    "local",
    "Test",
    "invalid",
    "localhost",
    "onion",
    "home",
    "example",
    "com",
    "org",
    "c0m",
    "1",
    "_",
    "[1.2.3.4]",
    "ä",
    "ex\u00adample",
    "b\u200bc",
    " ",
    "d" * 63,
    "e" * 64,
]
_LABELS = st.text("aZ09-", min_size=0, max_size=5) | st.sampled_from(_SPECIAL_LABELS)
_DOMAINS = st.lists(_LABELS, min_size=1, max_size=5).map(".".join)


def _accepted_in_full(address: str) -> bool:
    try:
        address_module._validate_in_full(address)
    except InvalidAddress:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(_LOCALS, _DOMAINS)
@example("a" * 64, "example.org")
@example("a" * 65, "example.org")
@example("a", ".".join(["d" * 63] * 3) + ".org")
@example("a", ".".join(["d" * 63] * 4))
@example("a", "e" * 64 + ".org")
@example("a", "sub.home.arpa")
@example("a", "x.test")
@example("a", "x.Onion")
def test_the_plain_address_shortcut_judges_as_email_validator(local: str, domain: str) -> None:
    """validate_address takes plain ASCII addresses without email-validator: every address it
    takes so must be one email-validator accepts with the same options."""
    address = f"{local}@{domain}"
    if address_module._plainly_valid(address):
        assert _accepted_in_full(address), address


@pytest.mark.parametrize(
    "address", ["news@example.com", "h1-22@example.org", "First.Last+x@Sub-1.Example.CO.uk"]
)
def test_common_addresses_take_the_shortcut(address: str) -> None:
    assert address_module._plainly_valid(address)
    assert _accepted_in_full(address)


def test_remembered_addresses_are_checked_once_and_invalid_ones_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []
    check = address_module._validate

    def counting(address: str) -> str:
        checked.append(address)
        return check(address)

    monkeypatch.setattr(address_module, "_validate", counting)
    many = [f"person{n}@example.org" for n in range(3)]
    with remembering_valid_addresses():
        for _ in range(3):
            assert [validate_address(a) for a in many] == many
            with pytest.raises(InvalidAddress):
                validate_address("ann@localhost")
    assert checked == [*many, "ann@localhost", "ann@localhost", "ann@localhost"]
    validate_address(many[0])  # outside the block: checked (its own cache aside)
    assert checked[-1] == many[0]


def test_recipient_key_and_domain() -> None:
    assert recipient_key("Ann@Example.ORG") == "ann@example.org"
    assert domain_of("Ann@Example.ORG") == "example.org"


def test_recipient_key_is_one_per_person_for_idna_domains() -> None:
    spellings = ["ÄNN@Bücher.example", "änn@xn--bcher-kva.example", "A\u0308NN@BÜCHER.example"]
    assert {recipient_key(a) for a in spellings} == {"änn@bücher.example"}
    assert domain_of("x@XN--BCHER-KVA.example") == "bücher.example"
    assert recipient_key("not an address") == "not an address"
    assert recipient_key("x@xn--zz.example") == "x@xn--zz.example"  # invalid: lower-cased only


RAW = (
    b"From: a@example.com\r\n"
    b"X-Sendguard-Campaign: spring\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"x-sendguard-requires: meeting:1:status=completed,\r\n"
    b" deal:9:stage=won\r\n"
    b"To: b@example.org\r\n"
    b"\r\n"
    b"X-Sendguard-Campaign: this is body text\r\n"
)


def test_split_message_keeps_every_byte() -> None:
    block, rest = split_message(RAW)
    assert block + rest == RAW
    assert rest.startswith(b"\r\n")
    assert split_message(b"Subject: x\n\nbody") == (b"Subject: x\n", b"\nbody")
    assert split_message(b"Subject: no body\r\n") == (b"Subject: no body\r\n", b"")


def test_strip_removes_only_sendguard_headers_with_continuations() -> None:
    stripped = strip_sendguard_headers(RAW)
    assert stripped == (
        b"From: a@example.com\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"To: b@example.org\r\n"
        b"\r\n"
        b"X-Sendguard-Campaign: this is body text\r\n"
    )
    untouched = b"From: a@example.com\r\n\r\nbody\r\n"
    assert strip_sendguard_headers(untouched) is untouched


def test_headers_parse_unfolds_and_decodes() -> None:
    headers = Headers.parse(split_message(RAW)[0])
    assert headers.get("subject") == "Grüße"
    assert headers.get("X-SENDGUARD-REQUIRES") == "meeting:1:status=completed, deal:9:stage=won"
    assert headers.get_all("to") == ["b@example.org"]
    assert headers.get("missing") is None
    repeated = Headers.parse(b"Received: one\r\nreceived: two\r\n\tfolded\r\nX: y\r\n")
    assert repeated.get("RECEIVED") == "one"
    assert repeated.get_all("Received") == ["one", "two folded"]
    repeated.get_all("received").clear()  # a copy: the headers stay as they are
    assert repeated.get_all("received") == ["one", "two folded"]
    assert repeated == Headers((("Received", "one"), ("received", "two folded"), ("X", "y")))


@pytest.mark.parametrize(
    ("block", "items"),
    [
        (b"Subject: plain\r\n", [("Subject", "plain")]),
        (b"Subject:  padded \t\r\n", [("Subject", "padded")]),
        (b"Subject: bare lf\nTo: x@e.org\n", [("Subject", "bare lf"), ("To", "x@e.org")]),
        (b"Subject: cr only\rTo: y@e.org\r", [("Subject", "cr only"), ("To", "y@e.org")]),
        (b"Subject: folded\r\n\tonce\r\n  twice\r\n", [("Subject", "folded once twice")]),
        (b"Subject: a\r\n \r\nTo: b\r\n", [("Subject", "a"), ("To", "b")]),
        (b"Bad Name: x\r\n: no name\r\nno colon\r\nX-Ok: \xff\r\n", [("X-Ok", "\ufffd")]),
        (b" leading continuation\r\nSubject: x\r\n", [("Subject", "x")]),
    ],
)
def test_headers_parse_reads_each_kind_of_line(block: bytes, items: list[tuple[str, str]]) -> None:
    """Single lines are read without the unfolding pass; folded ones with it: both as before."""
    assert list(Headers.parse(block).items) == items


@given(
    st.datetimes(timezones=st.none() | st.timezones()),
    st.integers(min_value=-86399, max_value=86399).map(lambda s: timezone(timedelta(seconds=s))),
    st.booleans(),
)
@example(datetime(1, 1, 1), UTC, True)
@example(datetime(9999, 12, 31, 23, 59, 59), timezone(timedelta(hours=-23, minutes=-59)), True)
def test_format_date_writes_what_the_email_package_writes(
    at: datetime, zone: timezone, fixed: bool
) -> None:
    if fixed and at.tzinfo is None:
        at = at.replace(tzinfo=zone)
    assert format_date(at) == email.utils.format_datetime(at)


def test_read_fields_from_headers() -> None:
    headers = Headers.parse(
        b"X-Sendguard-Requires: meeting:1:status=completed\r\n"
        b"X-Sendguard-Requires: deal:9:stage=won\r\n"
        b"X-Sendguard-Class: Transactional\r\n"
        b"X-Sendguard-Wait: 2h\r\n"
        b"X-Sendguard-Not-Before: 2026-11-22T09:00:00+01:00\r\n"
        b"X-Sendguard-Data-As-Of: 2026-11-21T09:00:00Z\r\n"
        b"X-Sendguard-Timezone: Europe/Berlin\r\n"
        b"List-Id: Spring news <spring.example.com>\r\n"
    )
    fields = read_fields(headers, DEFAULT_SOURCES)
    assert fields.campaign == "spring.example.com"
    assert fields.message_class is MessageClass.TRANSACTIONAL
    assert fields.requires == (
        Requirement("meeting:1:status", "completed"),
        Requirement("deal:9:stage", "won"),
    )
    assert fields.wait == timedelta(hours=2)
    assert fields.not_before == datetime(2026, 11, 22, 8, tzinfo=UTC)
    assert fields.data_as_of == datetime(2026, 11, 21, 9, tzinfo=UTC)
    assert fields.timezone == "Europe/Berlin"


def test_first_configured_header_wins() -> None:
    headers = Headers.parse(b"X-Mailgun-Tag: tagged\r\nX-Campaign: crm\r\n")
    assert read_fields(headers, DEFAULT_SOURCES).campaign == "crm"
    assert read_fields(headers, {"campaign": ["X-Mailgun-Tag"]}).campaign == "tagged"
    assert read_fields(Headers(()), DEFAULT_SOURCES).campaign is None


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Sendguard-Not-Before", "tomorrow"),
        ("X-Sendguard-Not-Before", "2026-11-22T09:00:00"),
        ("X-Sendguard-Data-As-Of", "yesterday"),
        ("X-Sendguard-Class", "urgent"),
        ("X-Sendguard-Wait", "a while"),
        ("X-Sendguard-Timezone", "Mars/Olympus"),
        ("X-Sendguard-Requires", "no-equals-sign"),
        ("X-Sendguard-Requires", "k=v; before=2026-01-01T00:00:00Z"),
        ("X-Sendguard-Requires", "k=v; after=soon"),
        ("X-Sendguard-Requires", "k=a||b"),
        ("X-Sendguard-Unless", "k in"),
        ("X-Sendguard-Unless", "=v"),
        ("X-Sendguard-On-Timeout", "later"),
    ],
)
def test_malformed_fields_name_the_header(header: str, value: str) -> None:
    headers = Headers.parse(f"{header}: {value}\r\n".encode())
    with pytest.raises(InvalidMessage) as caught:
        read_fields(headers, DEFAULT_SOURCES)
    assert caught.value.field == header
    assert header in str(caught.value)


def test_ids_are_strictly_increasing_and_unique() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)


@pytest.mark.parametrize(
    ("text", "key", "value", "match"),
    [
        ("meeting:1:status=completed", "meeting:1:status", "completed", Match.EQUAL),
        (" meeting:1:status = completed ", "meeting:1:status", "completed", Match.EQUAL),
        ("meeting:1:status!=no_show", "meeting:1:status", "no_show", Match.NOT_EQUAL),
        ("meeting:1:status in completed|held", "meeting:1:status", "completed|held", Match.ONE_OF),
        (
            "meeting:1:status in (completed | held)",
            "meeting:1:status",
            "completed|held",
            Match.ONE_OF,
        ),
        ("meeting:1:status=completed|held", "meeting:1:status", "completed|held", Match.ONE_OF),
        ("meeting:1:status!=a|b", "meeting:1:status", "a|b", Match.NOT_EQUAL),
        ("crm:{recipient}:stage=customer", "crm:{recipient}:stage", "customer", Match.EQUAL),
        ("note=a=b", "note", "a=b", Match.EQUAL),
    ],
)
def test_premise_operators(text: str, key: str, value: str, match: Match) -> None:
    premise = parse_requirement(text, field="f")
    assert (premise.key, premise.value, premise.match, premise.after) == (key, value, match, None)
    assert parse_requirement(str(premise), field="f") == premise


def test_premise_after_and_truth() -> None:
    premise = parse_requirement("m:1:status in a|b; after=2026-11-22T09:00:00Z", field="f")
    assert premise.after == datetime(2026, 11, 22, 9, tzinfo=UTC)
    assert parse_requirement(str(premise), field="f") == premise
    assert premise.holds("a") and premise.holds("b") and not premise.holds("c")
    negative = parse_requirement("m:1:status!=a|b", field="f")
    assert not negative.holds("a") and negative.holds("c")


def test_unless_and_on_timeout_headers() -> None:
    headers = Headers.parse(
        b"X-Sendguard-Unless: meeting:8812:status=no_show, deal:1:stage in lost|void\r\n"
        b"X-Sendguard-On-Timeout: Forward\r\n"
    )
    fields = read_fields(headers, DEFAULT_SOURCES)
    assert fields.unless == (
        Requirement("meeting:8812:status", "no_show"),
        Requirement("deal:1:stage", "lost|void", Match.ONE_OF),
    )
    assert fields.on_timeout is OnTimeout.FORWARD
    assert fields.requires == ()


def test_ids_made_in_one_millisecond_do_not_give_the_next_one_away() -> None:
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"

    def value(text: str) -> int:
        number = 0
        for char in text:
            number = number * 32 + alphabet.index(char)
        return number

    values = [value(new_id()) for _ in range(10_000)]
    same_millisecond = [(a, b) for a, b in itertools.pairwise(values) if a >> 80 == b >> 80]
    assert len(same_millisecond) > 100  # 10,000 ids take far less than 10,000 ms
    # each one is fresh or the previous plus a random step of up to 2**64: never simply the
    # next number (half of them were, when the random part was incremented)
    steps = [b - a for a, b in same_millisecond]
    assert all(step > 0 for step in steps)
    assert sum(step < 2**40 for step in steps) < 3


def test_stamp_adds_only_what_is_missing_and_keeps_every_other_byte() -> None:

    raw = b"From: a@example.com\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nBody\r\n"
    out = stamp(raw, "from x ([127.0.0.1])\r\n\tby h (sendguard) with ESMTP id 1", "D", "<i@h>")
    assert out == (
        b"Received: from x ([127.0.0.1])\r\n\tby h (sendguard) with ESMTP id 1\r\n"
        b"From: a@example.com\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        b"Message-ID: <i@h>\r\n\r\nBody\r\n"
    )
    lf = stamp(b"Subject: x\n\nBody\n", None, "D", "<i@h>")
    assert lf == b"Subject: x\nDate: D\nMessage-ID: <i@h>\n\nBody\n"
    assert stamp(b"Subject: x", None, "D", "<i@h>") == (
        b"Subject: x\r\nDate: D\r\nMessage-ID: <i@h>\r\n\r\n"
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@example.com\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nBody\r\n",
        b"Message-ID: <m@x>\r\nSubject: s\r\n\r\nBody\r\n",
        b"message-id: <m@x>\nDATE: D0\n\nBody\n",
        b"Subject: x",
        b"Subject: x\r\n\r\n",
    ],
)
def test_stamp_told_the_headers_writes_what_it_writes_when_it_reads_them(raw: bytes) -> None:
    written = Headers.parse(raw[: header_end(raw)])
    received = "from x ([127.0.0.1])\r\n\tby h (sendguard) with HTTP id 1"
    assert stamp(raw, received, "D", "<i@h>", written) == stamp(raw, received, "D", "<i@h>")
    # what it is told is what counts: told of a Date the block does not have, it adds none
    told = Headers((*written.items, ("Date", "D0")))
    assert b"NEWDATE" not in stamp(raw, None, "NEWDATE", "<i@h>", told)


def test_a_large_body_is_kept_byte_for_byte_by_strip_and_stamp() -> None:
    body = b"\r\n" + bytes(range(256)) * 4096 + b"\n.\r"
    raw = b"X-Sendguard-Campaign: c\r\nBcc: x@example.org\r\nSubject: s\r\n" + body
    assert header_end(raw) == len(raw) - len(body)
    stripped = strip_unforwarded_headers(raw)
    assert stripped == b"Subject: s\r\n" + body
    assert stamp(stripped, None, "D", "<i@h>") == (
        b"Subject: s\r\nDate: D\r\nMessage-ID: <i@h>\r\n" + body
    )


def _header_end_by_regex(raw: bytes) -> int:
    """What `header_end` answered with a regular expression, before it used `bytes.find`."""
    match = re.search(rb"\r?\n\r?\n", raw)
    if match is None:
        return len(raw)
    return match.start() + (2 if raw[match.start() : match.start() + 2] == b"\r\n" else 1)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b":", b" "]), max_size=40))
@example([b"a", b"\r", b"\n", b"\r", b"\r", b"\n", b"\n"])
@example([b"a", b"\n", b"\r", b"\r", b"\n", b"\n", b"\r\n"])
def test_header_end_is_the_first_blank_line_as_the_expression_found_it(
    pieces: list[bytes],
) -> None:
    raw = b"".join(pieces)
    assert header_end(raw) == _header_end_by_regex(raw)


@pytest.mark.parametrize("blank", [b"\r\n\r\n", b"\n\n", b"\r\n\n", b"\n\r\n", b"", b"\r\n"])
@pytest.mark.parametrize("at", [10, 64 * 1024 - 3, 64 * 1024 - 1, 64 * 1024, 200_000])
def test_header_end_past_the_first_window(blank: bytes, at: int) -> None:
    # A blank line before, across and after the end of the first 64 KiB searched.
    raw = b"X" * at + blank + b"body\n\nmore\r\n\r\n"
    assert header_end(raw) == _header_end_by_regex(raw)
    assert header_end(b"X" * at + blank) == _header_end_by_regex(b"X" * at + blank)


def test_an_id_is_its_millisecond_and_random_part_in_base32() -> None:
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    number = 0
    for char in made:
        number = number * 32 + alphabet.index(char)
    assert number < 2**128
    assert before <= number >> 80 <= after + 1  # +1: a step within the same millisecond
    assert made[0] in "01234567"  # 130 bits of text, the top two are 0


@settings(max_examples=500, deadline=None)
@given(
    raw=st.lists(
        st.sampled_from([b"\r", b"\n", b"\r\n", b"\n\n", b"\r\n\r\n", b"a", b"X: y", b" "]),
        max_size=30,
    ).map(b"".join),
    padding=st.sampled_from([0, 1, 8189, 8190, 8191, 70_000]),
)
def test_header_end_is_where_the_blank_line_pattern_first_matches(raw: bytes, padding: int) -> None:
    # Padding puts the blank line across the edges of the windows header_end looks in.
    raw = b"H" * padding + raw
    match = re.search(rb"\r?\n\r?\n", raw)
    expected = len(raw) if match is None else match.start() + (2 if raw[match.start()] == 13 else 1)
    assert header_end(raw) == expected


# Header lines as clients write them and as they should not: folded, without a colon, a name
# with blanks before the colon, our own headers, blind copies, Date and Message-ID in any case,
# bare CR and LF, a line of blanks, encoded words.
_HEADER_PIECES = st.sampled_from(
    [
        b"Subject: hi",
        b"Date: Tue, 01 Dec 2026 09:00:00 +0000",
        b"date :x",
        b"DATE\t: y",
        b"Message-ID: <a@b>",
        b"message-id:<c@d>",
        b"Message-ID",
        b"X-Sendguard-Campaign: c",
        b"x-sendguard-requires: a=b",
        b"Bcc: a@b",
        b"Resent-Bcc : c@d",
        b"bcc",
        b"X Date: no",
        b"To: =?utf-8?q?J=C3=B6rg?= <j@example.com>",
        b"\xff\xfe: z",
        b":",
        b" continued",
        b"\tfolded",
        b"   ",
        b"no colon",
        b"\r",
        b"\n",
        b"\r\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(_HEADER_PIECES, max_size=14),
    ends=st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b""]), min_size=14, max_size=14),
    body=st.sampled_from([b"", b"\r\n", b"\r\nbody\r\n", b"\n\nbody\n", b"\r\n\r\n.x\r\n"]),
)
@example(  # every header before the blank line stripped: stamp reads the body as headers
    pieces=[b"   ", b"Bcc: a@b", b"\r\n", b"message-id:<c@d>", b"DATE\t: y"],
    ends=[b"\n", b"\r\n", b"", b"", b"\n", *[b""] * 9],
    body=b"",
)
def test_read_incoming_reads_as_parse_strip_and_stamp(
    pieces: list[bytes], ends: list[bytes], body: bytes
) -> None:
    # The intake's one split of the header block against the three it replaced: the same
    # headers, the same stripped content, the same stamped copy.
    raw = b"".join(piece + end for piece, end in zip(pieces, ends, strict=False)) + body
    incoming = read_incoming(raw)
    assert incoming.headers == Headers.parse(raw[: header_end(raw)])
    stripped = strip_unforwarded_headers(raw)
    assert incoming.content == stripped
    present = incoming.present
    for received in (None, "from x\r\n\tby y"):
        expected = stamp(stripped, received, "Tue, 01 Dec 2026", "<id@h>")
        assert stamp(incoming.content, received, "Tue, 01 Dec 2026", "<id@h>", None, present) == (
            expected
        )
