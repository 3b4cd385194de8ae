"""The send path's shortcuts of session 14, each against the code it stands in for: a plain
payload checked without pydantic (`plain_send`) against `SendPayload.model_validate`; the kept
template of a message (`_single_part`) against the email package's bytes; the special-use
suffixes `address._special_suffixes` keeps, and the kept `Received:` sources (`_trace`)."""

from __future__ import annotations

import email.utils
import pickle
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sendguard import address
from sendguard.config.models import HttpOptions
from sendguard.content import fingerprints
from sendguard.headers import Headers, Trace, header_end
from sendguard.ingress import api_send
from sendguard.ingress.api_send import _single_part, build_mime_objects
from sendguard.ingress.http import build_app
from sendguard.ingress.http_context import Api
from sendguard.ingress.payloads import SendPayload, field_overrides, overrides_of
from sendguard.ingress.route import BY_ROUTE, TABLE
from sendguard.ingress.routes import ROUTES
from sendguard.ingress.send_payload import _PLAIN_KEYS, PlainSend, plain_send
from sendguard.tokens import TokenSet

NOW = datetime(2026, 12, 3, 9, tzinfo=UTC)

# Strings around every limit and check the shortcut makes: lengths 0, 1, 200, 201, 998,
# 999; ASCII and not; lone surrogates (pydantic refuses them in a checked string); each line
# break and control character a header may not hold; tabs (unprintable, but allowed).
_PIECES = st.sampled_from(
    ["a", "ann@example.org", " ", "\t", "\r", "\n", "\x00", "\x0b", "\x1c", "\x85", "é", "\ud800"]
)
_TEXT = st.one_of(
    st.lists(_PIECES, max_size=6).map("".join),
    st.text(max_size=20),
    st.sampled_from([n * "x" for n in (0, 1, 199, 200, 201, 997, 998, 999)]),
)
_VALUE = st.one_of(
    _TEXT,
    st.none(),
    st.integers(-2, 2),
    st.booleans(),
    st.lists(_TEXT, max_size=3),
    st.sampled_from([["a@example.org"] * 1000, ["a@example.org"] * 1001, {"X-A": "b"}]),
)
_KEYS = st.sampled_from(sorted(_PLAIN_KEYS | {"headers", "class", "from_", "requires", "x"}))


def _pydantic(data: Any) -> SendPayload | None:
    try:
        return SendPayload.model_validate(data)
    except ValidationError:
        return None


def _check_alike(data: Any) -> str:
    """How `data` was read; fails where the shortcut reads it otherwise than pydantic."""
    plain = plain_send(data)
    if plain is None:
        return "pydantic's"  # as before
    payload = _pydantic(data)
    assert payload is not None, data  # the shortcut takes only what pydantic takes
    for name in ("from_", "to", "cc", "bcc", "subject", "text", "html"):
        assert getattr(plain, name) == getattr(payload, name), name
    assert dict(plain.headers) == payload.headers
    given = {
        name: getattr(payload, name)
        for name in ("campaign", "offer")
        if name in payload.model_fields_set
    }
    assert plain.fields == given
    assert overrides_of(plain.fields) == field_overrides(payload)
    return "plain"


_ADDRESSES = st.lists(st.sampled_from(["a@example.org", "B <b@example.org>", ""]), max_size=3)
_PAYLOADS = st.fixed_dictionaries(
    {"from": st.one_of(st.just("news@example.com"), _TEXT)},
    optional={
        key: st.one_of(_ADDRESSES if key in ("to", "cc", "bcc") else _TEXT, _VALUE)
        for key in sorted(_PLAIN_KEYS - {"from"})
    },
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_PAYLOADS, st.dictionaries(_KEYS, _VALUE, max_size=1), st.booleans())
def test_a_plain_payload_is_what_pydantic_makes_of_it(
    data: dict[str, Any], other: dict[str, Any], mixed: bool
) -> None:
    event(_check_alike({**data, **other} if mixed else data))


@settings(max_examples=300, deadline=None)
@given(
    sender=_TEXT,
    to=st.lists(_TEXT, max_size=3),
    subject=_TEXT,
    text=st.none() | _TEXT,
    campaign=st.none() | _TEXT,
)
def test_a_payload_of_the_common_shape_is_what_pydantic_makes_of_it(
    sender: str, to: list[str], subject: str, text: str | None, campaign: str | None
) -> None:
    # Nearly every one of these has the keys the shortcut takes: the values decide.
    data = {"from": sender, "to": to, "subject": subject, "text": text, "campaign": campaign}
    event(_check_alike(data))


def test_the_bench_payload_is_plain() -> None:
    data = {
        "from": "news@example.com",
        "to": ["c1-2@example.org"],
        "subject": "Bench newsletter, HTTP",
        "text": "Hello, this week: new arrivals and ten percent off all of it.",
        "campaign": "bench-newsletter",
    }
    plain = plain_send(data)
    assert isinstance(plain, PlainSend)
    assert _check_alike(data) == "plain"


def test_a_plain_payload_can_go_to_a_worker_process() -> None:
    # A large body is built in a worker process (offload.in_process): it must pickle.
    plain = plain_send({"from": "a@example.com", "to": ["b@example.org"], "text": "x"})
    assert plain is not None
    assert pickle.loads(pickle.dumps(plain)) == plain


def test_what_is_not_plain_is_left_to_pydantic() -> None:
    base: dict[str, Any] = {"from": "a@example.com", "to": ["b@example.org"]}
    for other in (
        {"headers": {"X-A": "b"}},  # not a key the shortcut reads
        {"class": "transactional"},
        {"from_": "a@example.com"},  # by the field's name (populate_by_name)
        {"to": "b@example.org"},  # a string: pydantic's error says what to write
        {"subject": "Grüße"},  # not ASCII
        {"subject": "a\r\nBcc: x@example.org"},
        {"campaign": ""},
        {"campaign": "x" * 201},
        {"text": 3},
    ):
        assert plain_send({**base, **other}) is None, other
    assert plain_send([base]) is None
    assert plain_send({"to": ["b@example.org"]}) is None  # no from: pydantic names it


def _payload(to: str, text: str = "Hello,\nthis week.", **more: Any) -> SendPayload:
    return SendPayload.model_validate(
        {"from": "news@example.com", "to": [to], "subject": "This week", "text": text, **more}
    )


def _fixed_id(domain: str | None = None) -> str:
    return f"<fixed@{domain}>"


def test_a_kept_template_writes_what_the_email_package_writes() -> None:
    api_send._templates.clear()
    with patch.object(email.utils, "make_msgid", _fixed_id):
        for to in ("a@example.org", "b@example.org", "a@example.org"):
            payload = _payload(to, cc=["c@example.org"], headers={"X-Note": "n"})
            built = _single_part(payload, NOW)
            assert built is not None
            raw = build_mime_objects(payload, NOW)
            assert built.raw == raw
            assert built.fingerprint == fingerprints(raw)
            assert built.headers == Headers.parse(raw[: header_end(raw)])
    assert len(api_send._templates) == 1  # one content, three recipients


@settings(max_examples=200, deadline=None)
@given(
    to=st.lists(
        st.sampled_from(["a@example.org", "=?utf-8?q?x?= <b@example.org>", "c" * 70 + "@x.org"]),
        min_size=1,
        max_size=2,
    ),
    when=st.datetimes(timezones=st.just(UTC)),
)
def test_a_template_taken_again_gives_what_writing_it_anew_gives(
    to: list[str], when: datetime
) -> None:
    payload = SendPayload.model_validate(
        {"from": "news@example.com", "to": to, "subject": "S", "text": "Hi"}
    )
    with patch.object(email.utils, "make_msgid", _fixed_id):
        api_send._templates.clear()
        anew = _single_part(payload, when)
        again = _single_part(payload, when)  # the kept template
        assert again == anew
        if anew is not None:  # the recipient's line checked per message: too long, or a word
            assert anew.raw == build_mime_objects(payload, when)
            event("headers given" if anew.headers is not None else "headers parsed")
        else:
            event("not written directly")


def test_the_kept_templates_are_bounded() -> None:
    api_send._templates.clear()
    for n in range(api_send._TEMPLATES + 10):
        assert _single_part(_payload("a@example.org", text=f"text {n}"), NOW) is not None
    assert len(api_send._templates) == api_send._TEMPLATES
    big = "x\n" * (api_send._TEMPLATE_BODY // 2 + 1)
    api_send._templates.clear()
    assert _single_part(_payload("a@example.org", text=big), NOW) is not None
    assert not api_send._templates  # a large body is written, not kept


def test_a_special_use_name_added_at_run_time_is_refused() -> None:
    # email-validator documents that a program may change its list; the suffixes kept
    # (`address._special_suffixes`) must follow it.
    assert address._plainly_valid("ann@shop.example-corp.org")
    SPECIAL_USE_DOMAIN_NAMES.append("example-corp.org")
    try:
        assert not address._plainly_valid("ann@shop.example-corp.org")
    finally:
        SPECIAL_USE_DOMAIN_NAMES.remove("example-corp.org")
    assert address._plainly_valid("ann@shop.example-corp.org")


def test_the_kept_traces_are_those_made_anew_and_bounded() -> None:
    api_send._traces.clear()
    for remote in ("127.0.0.1", None, "::1", "127.0.0.1", ""):
        assert api_send._trace(remote) == Trace(f"HTTP client ([{remote or 'unknown'}])", "HTTP")
    assert len(api_send._traces) == 4
    for n in range(api_send._TRACES + 5):
        api_send._trace(f"10.0.{n // 256}.{n % 256}")
    assert len(api_send._traces) == api_send._TRACES


def test_each_route_is_found_as_by_its_method_and_path() -> None:
    # `route_of` looks a route up by aiohttp's route object; it must find the record the
    # look-up by method and path found (a HEAD: its GET's), for every route served.
    app = build_app(
        Api(*(None,) * 6, lambda: None, HttpOptions()),  # type: ignore[arg-type]
        TokenSet([("t", "secret")]),
    )
    served = 0
    for route in app.router.routes():
        resource = route.resource
        if resource is None:
            continue
        method = "GET" if route.method == "HEAD" else route.method
        expected = app[TABLE].get((method, resource.canonical))
        assert app[BY_ROUTE].get(route) is expected, (route.method, resource.canonical)
        served += expected is not None
    assert served > len(ROUTES)  # every route of the table, and the HEADs of the GETs
