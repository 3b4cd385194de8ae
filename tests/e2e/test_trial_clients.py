"""What a new user's outside clients found at the edges (trial of 2026-12-02).

- A `Bcc` header written with a blank before its colon (`Bcc : x`, RFC 5322's obsolete syntax,
  which readers must accept) reached the upstream: the blind recipients were shown to everyone.
- The JSON send wrote an address header with a non-ASCII display name or address as one RFC
  2047 encoded word (`To: =?utf-8?b?...?=`), which hides the address (RFC 2047 5: an encoded
  word is never an addr-spec): a From set through `headers` had no sender address left.
- `upstream: {kind: smtps, host: ..., port: ...}` (a kind that does not exist) was reported as
  `upstream.host: unknown key`, not as the unknown kind.
- A message/rfc822 send with a line over 998 octets was accepted (202) and then failed at the
  SMTP upstream (`500 Line too long`), where the SMTP intake refuses it at once.
- Not fixed here (it changes stored fingerprints): the content fingerprint's greeting rule
  erases a whole short one-line text, so different short messages under one subject count as
  one content (the last test fails until it is fixed).
"""

from __future__ import annotations

import email.header
import email.utils
import re
import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_send_path import send
from tests.support.process import SendguardProcess, base_config, run_with_config
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]


BLANK_BEFORE_COLON = (
    b"From: shop@example.com\r\n"
    b"Bcc : hidden@example.org\r\n"
    b"To: list@example.net\r\n"
    b"Subject: Hello\r\n"
    b"Message-ID: <bcc@example.com>\r\n"
    b"\r\n"
    b"Hi there\r\n"
)


def test_smtp_bcc_with_a_blank_before_the_colon_never_reaches_the_upstream(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    send(proc, ["ann@example.org"], BLANK_BEFORE_COLON)
    (got,) = sink.wait_for(1)
    assert b"hidden@example.org" not in got.content, got.content
    assert b"Hi there\r\n" in got.content


def test_rfc822_post_bcc_with_a_blank_before_the_colon_never_reaches_the_upstream(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    status, answer = proc.call(
        "POST",
        "/v1/messages",
        raw=BLANK_BEFORE_COLON,
        headers={"Content-Type": "message/rfc822"},
    )
    assert status == 202, answer
    got = sink.wait_for(2)
    proc.wait_settled()
    assert sorted(r.rcpt_tos[0] for r in got) == ["hidden@example.org", "list@example.net"]
    for received in got:
        assert b"hidden@example.org" not in received.content.split(b"\r\n\r\n")[0].replace(
            b"for <hidden@example.org>", b""
        ), received.content


def _addresses(content: bytes, name: str) -> list[tuple[str, str]]:
    """The (display name, address) pairs of header `name` as a reader finds them: addresses
    from the raw value (an encoded word is never one, RFC 2047 5), then names decoded."""
    block = content.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    unfolded = re.sub(r"\r\n[ \t]+", " ", block).split("\r\n")
    prefix = f"{name.lower()}:"
    raw = [line[len(prefix) :] for line in unfolded if line.lower().startswith(prefix)]
    return [(_decoded(shown), address) for shown, address in email.utils.getaddresses(raw)]


def _decoded(words: str) -> str:
    if "=?" not in words:
        return words
    return "".join(
        part.decode(charset or "ascii") if isinstance(part, bytes) else part
        for part, charset in email.header.decode_header(words)
    )


def test_json_send_with_a_non_ascii_display_name_keeps_the_sender_address(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    status, answer = proc.call(
        "POST",
        "/v1/messages",
        {
            "from": "shop@example.com",
            "to": ["ann@example.org"],
            "subject": "Hallo",
            "text": "Grüße",
            "headers": {
                "From": "Jürgen Müller <shop@example.com>",
                "Reply-To": "Kundenservice Müller <help@example.com>",
            },
        },
    )
    assert status == 202, answer
    (got,) = sink.wait_for(1)
    assert _addresses(got.content, "From") == [("Jürgen Müller", "shop@example.com")], got.content
    assert _addresses(got.content, "Reply-To") == [("Kundenservice Müller", "help@example.com")], (
        got.content
    )


def test_json_send_to_an_internationalised_address_writes_it_in_to(
    tmp_path: Path, utf8_sink: Sink
) -> None:
    proc = SendguardProcess(tmp_path, base_config(utf8_sink.port))
    proc.start()
    try:
        status, answer = proc.call(
            "POST",
            "/v1/messages",
            {
                "from": "shop@example.com",
                "to": ["zoë@bücher.example"],
                "cc": ["ann@example.org"],
                "subject": "Hallo",
                "text": "Grüße",
            },
        )
        assert status == 202, answer
        got = utf8_sink.wait_for(2)
        for received in got:
            assert _addresses(received.content, "To") == [("", "zoë@bücher.example")], (
                received.content
            )
            assert _addresses(received.content, "Cc") == [("", "ann@example.org")]
            # The header is UTF-8 now: each copy goes as 8BITMIME (as a raw UTF-8 header
            # over SMTP or message/rfc822 does), the one to the UTF-8 address with SMTPUTF8.
            assert "BODY=8BITMIME" in received.mail_options, received.mail_options
            if received.rcpt_tos == ["zoë@bücher.example"]:
                assert "SMTPUTF8" in received.mail_options, received.mail_options
    finally:
        proc.stop()


def test_check_config_names_an_unknown_upstream_kind_given_with_host_and_port(
    tmp_path: Path,
) -> None:
    config = base_config(None)
    config["upstream"] = {"kind": "smtps", "host": "mail.example.com", "port": 465}
    code, output = run_with_config("check-config", config, tmp_path)
    assert code == 2
    assert "upstream.kind" in output and "'smtps'" in output, output
    assert "installed:" in output and "smtp" in output, output


def test_rfc822_post_with_a_line_over_998_octets_is_refused_as_smtp_refuses_it(
    sendguard: Start, sink: Sink
) -> None:
    """The SMTP intake answers `500 Line too long`; the HTTP intake answered 202 and the
    delivery then failed at the upstream (`500 Line too long`): a send the client thought done."""
    proc = sendguard()
    raw = (
        b"From: shop@example.com\r\nTo: ann@example.org\r\nSubject: long\r\n"
        b"X-Long: " + b"a" * 1200 + b"\r\n\r\nbody\r\n"
    )
    status, answer = proc.call(
        "POST", "/v1/messages", raw=raw, headers={"Content-Type": "message/rfc822"}
    )
    assert status == 400, answer
    assert answer["error"]["field"] == "body", answer
    assert "line 4" in answer["error"]["message"], answer
    assert proc.states() == {}
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10) as client:
        client.ehlo("client.example")
        client.mail("shop@example.com")
        client.rcpt("ann@example.org")
        code, _ = client.data(raw)
    assert code == 500
    # A line of 998 octets is fine on both ways in.
    fits = raw.replace(b"a" * 1200, b"a" * (998 - len(b"X-Long: ")))
    status, answer = proc.call(
        "POST", "/v1/messages", raw=fits, headers={"Content-Type": "message/rfc822"}
    )
    assert status == 202, answer
    (got,) = sink.wait_for(1)
    assert b"a" * 990 in got.content


def test_short_messages_that_open_with_a_greeting_are_not_one_content(
    sendguard: Start, sink: Sink
) -> None:
    """The content fingerprint drops a greeting line (`Hallo Ann,`) with up to 60 characters
    after it. A short message is often one line: `Hi Ann, your table is booked for 8pm.` in
    plain text, or HTML with no line break between its paragraphs
    (`<p>Hallo Ann,</p><p>...</p>`, as email builders write it). The whole text went with the
    greeting, so different messages under one subject had one fingerprint and the repetition
    policy dropped the second and third as repeats of the first."""
    proc = sendguard(policies=[{"plugin": "repetition", "options": {"limit": 1, "window": "1d"}}])
    bodies = [
        {"html": "<p>Hallo Ann,</p><p>Spring sale: 20% off everything.</p>"},
        {"html": "<p>Hallo Ann,</p><p>Our autumn collection is here.</p>"},
        {"text": "Hi Ann, your table is booked for 8pm."},
    ]
    for body in bodies:
        status, answer = proc.call(
            "POST",
            "/v1/messages",
            {"from": "shop@example.com", "to": ["ann@example.org"], "subject": "News", **body},
        )
        assert status == 202, answer
        (delivery,) = answer["deliveries"]
        assert delivery["state"] == "queued", delivery
