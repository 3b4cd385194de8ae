"""The edges of the resend check, as a client that lost the 250 after DATA meets them: the copy
names its recipient or sender in another letter case, writes its Message-ID with other blanks
or folded, carries UTF-8 (SMTPUTF8), arrives while the first is still being delivered or after
sendguard was killed and restarted, names one more (Bcc) recipient, or is a real lost reply
(a connection whose 250 never reached the client: smtplib, and nodemailer's pooled transport
after its socket timeout). Each recipient gets one copy; a recipient the first message did not
have gets it; the same message from another envelope sender is another message
(sendguard/resend.py, docs/configuration.md `resend_window`). Clients: smtplib, swaks
(skipped without it), nodemailer (skipped without `make node-sdks`).

SQLite only: the check's store reads run on both backends in tests/e2e/test_smtp_resend.py.
"""

from __future__ import annotations

import contextlib
import shutil
import smtplib
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.test_send_path import message, send
from tests.support.node_smtp import run_nodemailer
from tests.support.process import SendguardProcess, base_config, free_port
from tests.support.sink import Sink

pytestmark = [pytest.mark.e2e]
Start = Callable[..., SendguardProcess]

SWAKS = shutil.which("swaks")


def _dropped_as_resend(proc: SendguardProcess, message_id: str) -> None:
    """Every delivery of `message_id` was dropped by the resend check."""
    for delivery in proc.deliveries(message_id):
        assert delivery["state"] == "dropped", delivery
        assert [r["policy"] for r in delivery["reasons"]] == ["resend"], delivery


# 1. Letter case of the envelope addresses.


@pytest.mark.parametrize(
    ("first", "again"),
    [
        ("Ann@Example.COM", "ann@example.com"),  # local part and domain
        ("ann@EXAMPLE.com", "ann@example.com"),  # domain only
    ],
)
def test_a_copy_to_the_recipient_in_another_letter_case_is_not_sent_twice(
    sendguard: Start, sink: Sink, first: str, again: str
) -> None:
    proc = sendguard()
    order = message(subject="Order 1", message_id="<case-1@shop.example>")
    send(proc, [first], order)
    copy = send(proc, [again], order)
    proc.wait_settled()
    _dropped_as_resend(proc, copy)
    assert [g.rcpt_tos for g in sink.received] == [[first]]


def test_a_copy_from_the_sender_in_another_letter_case_or_from_the_null_sender_is_not_sent_twice(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    order = message(subject="Order 2", message_id="<case-2@shop.example>")
    send(proc, ["bo@example.org"], order, sender="Shop@Example.COM")
    copy = send(proc, ["bo@example.org"], order, sender="shop@example.com")
    # A bounce (the null sender) resent is a copy too.
    bounce = message(subject="Undeliverable", message_id="<bounce-1@mx.example>")
    send(proc, ["cy@example.org"], bounce, sender="")
    bounce_copy = send(proc, ["cy@example.org"], bounce, sender="")
    proc.wait_settled()
    _dropped_as_resend(proc, copy)
    _dropped_as_resend(proc, bounce_copy)
    assert sorted(g.rcpt_tos[0] for g in sink.received) == ["bo@example.org", "cy@example.org"]


# 2. The Message-ID written with other blanks, folded, or under another spelling of its name.

_BODY = "Hello Dee,\r\nyour invoice is attached.\r\n"


def _invoice(message_id_line: str) -> bytes:
    return (
        "From: billing@shop.example\r\nTo: dee@example.org\r\nSubject: Invoice 77\r\n"
        f"{message_id_line}\r\n\r\n{_BODY}"
    ).encode()


def _swaks(proc: SendguardProcess, sender: str, rcpt: str, *options: str) -> str:
    """swaks from `sender` to `rcpt` with `options`; return the queue id from its 250."""
    assert SWAKS is not None
    server = ["--server", f"127.0.0.1:{proc.smtp_port}", "--timeout", "10"]
    done = subprocess.run(
        [SWAKS, *server, "--from", sender, "--to", rcpt, *options],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (queued,) = [line for line in done.stdout.splitlines() if "queued as" in line]
    return queued.rsplit(" ", 1)[1]


def _swaks_data(proc: SendguardProcess, rcpt: str, data: bytes, tmp_path: Path, name: str) -> str:
    """Send `data` as it is with swaks; return the queue id from its 250."""
    path = tmp_path / name
    path.write_bytes(data)
    return _swaks(proc, "billing@shop.example", rcpt, "--data", str(path))


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (apt-get install swaks)")
def test_a_copy_whose_message_id_is_folded_or_blank_padded_is_not_sent_twice(
    sendguard: Start, sink: Sink, tmp_path: Path
) -> None:
    proc = sendguard()
    _swaks_data(
        proc, "dee@example.org", _invoice("Message-ID: <inv-77@shop.example>"), tmp_path, "a"
    )
    copies = [
        # Folded by hand (RFC 5322 2.2.3), blanks around the value.
        _swaks_data(
            proc,
            "dee@example.org",
            _invoice("Message-ID:\r\n   <inv-77@shop.example>  "),
            tmp_path,
            "b",
        ),
        # Another spelling of the header's name and a tab, through smtplib (with the empty
        # line swaks ends its data with: the body is compared byte for byte).
        send(
            proc,
            ["dee@example.org"],
            _invoice("Message-Id:\t<inv-77@shop.example>") + b"\r\n",
            "billing@shop.example",
        ),
    ]
    proc.wait_settled()
    for copy in copies:
        _dropped_as_resend(proc, copy)
    assert len(sink.received) == 1


# 3. SMTPUTF8.

_UTF8 = (
    "From: Jörg <jörg@bücher.example>\r\nTo: zoë@example.org\r\nSubject: Grüße, Zoë\r\n"
    "Message-ID: <grüße-1@bücher.example>\r\n\r\nGrüße aus Köln\r\n"
).encode()


def _send_utf8(proc: SendguardProcess, rcpt: str, sender: str = "jörg@bücher.example") -> str:
    with smtplib.SMTP("127.0.0.1", proc.smtp_port, timeout=10) as client:
        client.ehlo("test")
        client.mail(sender, ["SMTPUTF8", "BODY=8BITMIME"])
        assert client.rcpt(rcpt)[0] == 250
        code, reply = client.data(_UTF8)
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[1]


def test_an_smtputf8_copy_is_not_sent_twice(sendguard: Start, utf8_sink: Sink) -> None:
    proc = sendguard(base_config(utf8_sink.port))
    first = _send_utf8(proc, "zoë@example.org")
    copies = [
        _send_utf8(proc, "ZOË@EXAMPLE.ORG"),  # the same person, in capitals
        # The sender's domain in its ASCII form (IDNA A-label) is the same sender.
        _send_utf8(proc, "zoë@example.org", sender="jörg@xn--bcher-kva.example"),
    ]
    proc.wait_settled()
    for copy in copies:
        _dropped_as_resend(proc, copy)
    (got,) = utf8_sink.received
    assert got.rcpt_tos == ["zoë@example.org"]
    assert "Grüße aus Köln".encode() in got.content
    # The recipient's timeline says why, quoting the client's UTF-8 Message-ID.
    reasons = [
        reason for state, reason in proc.transitions("zoë@example.org") if state == "dropped"
    ]
    quoted = f"resend: a copy of message {first} (Message-ID <grüße-1@bücher.example>) accepted"
    assert len(reasons) == 2 and all(r.startswith(quoted) for r in reasons), reasons


# 4. A copy while the first is still being delivered; a copy after kill -9 and a restart.


def test_a_copy_while_the_first_is_being_sent_upstream_is_not_sent_twice(
    sendguard: Start, sink: Sink
) -> None:
    proc = sendguard()
    sink.handler.delay = 30.0  # the upstream takes its time to answer the first DATA
    order = message(subject="Order 3", message_id="<slow-1@shop.example>")
    first = send(proc, ["eve@example.org"], order)
    proc.wait_states({"eve@example.org": "sending"}, first)
    copy = send(proc, ["eve@example.org"], order)  # a second connection, meanwhile
    _dropped_as_resend(proc, copy)
    sink.handler.release()
    proc.wait_states({"eve@example.org": "sent"}, first)
    proc.wait_settled()
    assert len(sink.received) == 1


def test_a_copy_after_kill_9_and_a_restart_is_not_sent_twice(sendguard: Start, sink: Sink) -> None:
    # The first copy is not delivered yet when sendguard dies (the upstream deferred it): the
    # copy the client sends to the restarted server is dropped, the first is sent once.
    sink.script(["451 4.3.0 try again later"])
    proc = sendguard()
    order = message(subject="Order 4", message_id="<restart-1@shop.example>")
    first = send(proc, ["fay@example.org"], order)
    proc.wait_states({"fay@example.org": "deferred"}, first)
    proc.kill9()
    proc.start()
    copy = send(proc, ["fay@example.org"], order)
    _dropped_as_resend(proc, copy)
    proc.wait_states({"fay@example.org": "sent"}, first, timeout=20)
    proc.wait_settled()
    assert len(sink.received) == 1
    # And once it is sent, a copy after another kill -9 is still one.
    proc.kill9()
    proc.start()
    _dropped_as_resend(proc, send(proc, ["fay@example.org"], order))
    proc.wait_settled()
    assert len(sink.received) == 1


# 5. Another envelope sender; one more (Bcc) recipient.


def test_the_same_message_from_another_envelope_sender_is_another_message(
    sendguard: Start, sink: Sink
) -> None:
    # As docs/configuration.md says: the envelope sender is part of what a copy is (a client
    # resending its queued copy never changes it; a tool sending one mail for two senders does).
    proc = sendguard()
    order = message(subject="Order 5", message_id="<sender-1@shop.example>")
    send(proc, ["gus@example.org"], order, sender="shop@example.com")
    other = send(proc, ["gus@example.org"], order, sender="bounces@shop.example")
    proc.wait_states({"gus@example.org": "sent"}, other)
    assert len(sink.wait_for(2)) == 2


def test_a_copy_with_one_more_bcc_recipient_reaches_only_that_one(
    sendguard: Start, sink: Sink
) -> None:
    # The Bcc recipient is an RCPT with no header: the content is the same bytes.
    proc = sendguard()
    order = message(subject="Order 6", message_id="<bcc-1@shop.example>")
    send(proc, ["hal@example.org", "ida@example.org"], order)
    copy = send(proc, ["hal@example.org", "ida@example.org", "audit@shop.example"], order)
    proc.wait_settled()
    assert proc.states(copy) == {
        "hal@example.org": "dropped",
        "ida@example.org": "dropped",
        "audit@shop.example": "sent",
    }
    assert sorted(r for g in sink.received for r in g.rcpt_tos) == [
        "audit@shop.example",
        "hal@example.org",
        "ida@example.org",
    ]


# 6. A reply that really was lost: the client times out waiting for the 250 and sends again.


class _LosingProxy:
    """A TCP relay in front of sendguard's SMTP listener that never passes on, on its first
    connection, the reply to the end of DATA: the client waits for a 250 that does not come."""

    def __init__(self, target: int) -> None:
        self.port = free_port()
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._connections = 0
        self._open: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._target))
            self._open += [client, server]
            self._connections += 1
            ended = threading.Event()  # the client has sent the end of DATA
            lose = self._connections == 1
            threading.Thread(target=self._send, args=(client, server, ended), daemon=True).start()
            threading.Thread(
                target=self._reply, args=(server, client, ended if lose else None), daemon=True
            ).start()

    @staticmethod
    def _send(client: socket.socket, server: socket.socket, ended: threading.Event) -> None:
        """The client's commands and data to the server, noting the end of DATA."""
        tail = b""
        try:
            while data := client.recv(65536):
                tail = (tail + data)[-5:]
                if tail == b"\r\n.\r\n":
                    ended.set()  # before the server can answer
                server.sendall(data)
        except OSError:
            pass
        # The client went away (its timeout): so does its connection to sendguard.
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _reply(server: socket.socket, client: socket.socket, ended: threading.Event | None) -> None:
        """The server's replies to the client, but those after `ended` (if given) are lost."""
        try:
            while data := server.recv(65536):
                if ended is None or not ended.is_set():
                    client.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked on it
            sock.close()


@pytest.fixture
def losing_proxy() -> Iterator[Callable[[int], _LosingProxy]]:
    made: list[_LosingProxy] = []

    def make(target: int) -> _LosingProxy:
        made.append(_LosingProxy(target))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def test_a_client_that_timed_out_waiting_for_the_250_and_sent_again_is_sent_once(
    sendguard: Start, sink: Sink, losing_proxy: Callable[[int], _LosingProxy]
) -> None:
    proc = sendguard()
    proxy = losing_proxy(proc.smtp_port)
    order = message(subject="Order 7", message_id="<lost-250@shop.example>")
    client = smtplib.SMTP("127.0.0.1", proxy.port, timeout=1.5)
    try:
        client.ehlo("test")
        client.mail("shop@example.com")
        client.rcpt("jo@example.org")
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            client.data(order)
    finally:
        client.close()  # no QUIT: its reply would be lost too
    # The client's retry, on a new connection (its reply reaches it).
    with smtplib.SMTP("127.0.0.1", proxy.port, timeout=10) as client:
        client.ehlo("test")
        client.mail("shop@example.com")
        client.rcpt("jo@example.org")
        code, reply = client.data(order)
    assert code == 250, reply
    proc.wait_settled()
    _dropped_as_resend(proc, reply.decode().rsplit(" ", 1)[1])
    assert len(sink.received) == 1


# 6 (nodemailer). An app on a pooled transport whose first sendMail timed out waiting for the
# 250 calls sendMail again with the same `messageId`: nodemailer builds the message anew (new
# boundaries, new Date) on a new pooled connection.


RECEIPT = {
    "from": "shop@example.com",
    "to": "kim@example.org",
    "subject": "Ihre Bestellung 4712",
    "text": "Hallo Kim,\n\ndanke für Ihre Bestellung.\n",
    "html": "<p>Hallo Kim,</p><p>danke für Ihre Bestellung.</p>",
    "messageId": "<order-4712@shop.example>",
}


def test_a_pooled_nodemailer_retry_after_a_socket_timeout_is_sent_once(
    sendguard: Start,
    sink: Sink,
    nodemailer_script: Path,
    losing_proxy: Callable[[int], _LosingProxy],
) -> None:
    proc = sendguard()
    proxy = losing_proxy(proc.smtp_port)
    spec = {"pool": True, "transport": {"socketTimeout": 1000}, "messages": [RECEIPT, RECEIPT]}
    lost, retried = run_nodemailer(str(nodemailer_script), proxy.port, spec)
    assert "error" in lost, lost  # nodemailer gave up on the first: it never heard the 250
    assert retried["response"].startswith("250"), retried
    proc.wait_settled()
    assert [d["state"] for d in proc.deliveries()] == ["sent", "dropped"], proc.deliveries()
    assert len(sink.received) == 1


def test_a_nodemailer_retry_with_an_added_bcc_reaches_only_the_bcc_recipient(
    sendguard: Start, sink: Sink, nodemailer_script: Path
) -> None:
    proc = sendguard()
    spec = {"messages": [RECEIPT, {**RECEIPT, "bcc": "audit@shop.example"}]}
    first, again = run_nodemailer(str(nodemailer_script), proc.smtp_port, spec)
    assert first["response"].startswith("250") and again["response"].startswith("250")
    proc.wait_settled()
    queued = again["response"].rsplit(" ", 1)[1]
    assert proc.states(queued) == {"kim@example.org": "dropped", "audit@shop.example": "sent"}
    got = sink.received
    assert sorted(r for g in got for r in g.rcpt_tos) == ["audit@shop.example", "kim@example.org"]
    assert all(b"Bcc:" not in g.content for g in got)  # blind as ever


def test_a_nodemailer_retry_of_a_large_message_with_an_attachment_is_sent_once(
    sendguard: Start, sink: Sink, nodemailer_script: Path, tmp_path: Path
) -> None:
    # Over 256 KB (the check's body digest runs in a thread) and nested multiparts
    # (mixed > alternative), each with new boundaries in the retry.
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(bytes(range(256)) * 1500)  # 384 KB, some 520 KB as base64
    mail = {**RECEIPT, "attachments": [{"filename": "invoice.pdf", "path": str(pdf)}]}
    proc = sendguard()
    first, again = run_nodemailer(
        str(nodemailer_script), proc.smtp_port, {"messages": [mail, mail]}
    )
    assert first["response"].startswith("250") and again["response"].startswith("250")
    proc.wait_settled()
    assert proc.states(again["response"].rsplit(" ", 1)[1]) == {"kim@example.org": "dropped"}
    (got,) = sink.received
    assert got.message.get_content_type() == "multipart/mixed"


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (apt-get install swaks)")
def test_swaks_sending_its_message_again_with_the_header_option_is_sent_once(
    sendguard: Start, sink: Sink
) -> None:
    # swaks writes a new Date (a header, not compared) each time; its default Subject carries
    # the time too, so a retry that is a copy names its Subject (and Message-ID) itself. Its
    # `--header` replaces a header of the same spelling only: `Message-Id`, as swaks writes it
    # (`--header "Message-ID: ..."` adds a second one after swaks' own, new each time, and
    # the first is the message's: two runs are then two messages).
    assert SWAKS is not None
    proc = sendguard()
    queued = []
    for message_id in ("<swaks-1@shop.example>", "  <swaks-1@shop.example> "):
        options = ("--header", f"Message-Id: {message_id}", "--header", "Subject: Order 8")
        queued.append(_swaks(proc, "shop@example.com", "lea@example.org", *options))
    proc.wait_settled()
    _dropped_as_resend(proc, queued[1])
    (got,) = sink.received
    assert got.message.get_all("Message-Id") == ["<swaks-1@shop.example>"]
