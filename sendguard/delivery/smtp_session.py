"""A session with the SMTP upstream: mail transactions on a connection aiosmtplib opened.

aiosmtplib opens the connection (implicit TLS or STARTTLS, AUTH, EHLO); the transactions are
sendguard's own, for what aiosmtplib cannot do:

- **PIPELINING** (RFC 2920). aiosmtplib sends MAIL, waits for its reply, then RCPT, waits,
  then DATA, waits: each a write (on loopback the kernel runs the receiver's side of it
  too) and a turn of the loop. When the upstream offers PIPELINING, MAIL, RCPT and DATA go
  in one write and their replies are read together: a message costs two writes and two
  waits instead of four. aiosmtplib's protocol cannot read pipelined replies: it parses one
  reply per arrival of data and drops what arrives while a parsed reply waits to be picked
  up. An upstream that does not offer PIPELINING gets the commands one by one, each after
  the reply to the one before, as aiosmtplib sent them.
- **Every reply checked** (RFC 2920 3.1): a refused MAIL or RCPT is never followed by the
  message; if the upstream accepted the pipelined DATA anyway, a lone "." ends it; then
  RSET, as aiosmtplib's `sendmail` does after a refusal.
- **A large message in pieces** (`smtp_data`): written with flow control, each piece when
  the socket has taken most of the one before.

The octets on the wire are those aiosmtplib would send (the same command lines, SIZE, the
same DATA form), only grouped into fewer writes; replies are parsed as aiosmtplib parses
them and failures raised as its exceptions (`SMTPSenderRefused`, `SMTPRecipientRefused`,
`SMTPDataError`, `SMTPServerDisconnected`, `SMTPReadTimeoutError`, ValueError for an address
that cannot go on a command line), so the upstream maps them as before.
tests/e2e/test_upstream_smtp_session.py checks both against real servers.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Sequence
from typing import cast

import aiosmtplib
from aiosmtplib.email import quote_address

__all__ = ["Session", "mailbox"]

_COMPLETED = aiosmtplib.SMTPStatus.completed
_START_INPUT = aiosmtplib.SMTPStatus.start_input
_CLOSING = aiosmtplib.SMTPStatus.domain_unavailable  # 421: the upstream closes the session

# What aiosmtplib's protocol bounds (a reply line, a whole reply) and refuses on a command
# line (any C0 control or DEL: CR, LF and NUL would let an address inject a command).
_MAX_LINE = 8192
_MAX_REPLY = _MAX_LINE * 4
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")

# A dot-atom local part and a domain of letters, digits and hyphens: what nearly every
# address is. aiosmtplib's `quote_address` gives such an address back as it came, in angle
# brackets; it parses every address with `email.utils.parseaddr` (some 10 µs each), which
# `mailbox` leaves to the others.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


def mailbox(address: str, encoding: str) -> bytes:
    """`address` as MAIL FROM or RCPT TO carry it (`<…>`), exactly as aiosmtplib quotes it.

    Raises ValueError for an address that cannot be put on a command line.
    """
    if _PLAIN_ADDRESS.fullmatch(address):
        return b"<" + address.encode("ascii") + b">"
    quoted = quote_address(address).encode(encoding)  # the null sender "" becomes "<>"
    if _CONTROL.search(quoted):
        raise ValueError("Command arg contains a prohibited control character")
    return quoted


class _Replies(asyncio.Protocol):
    """The upstream's replies, parsed as they arrive and queued in order, however many one
    read brings; with asyncio's flow control for writes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buffer = bytearray()
        self.replies: deque[aiosmtplib.SMTPResponse] = deque()
        self.error: aiosmtplib.SMTPException | None = None
        """Why no more replies will come (the connection was lost, a reply was malformed)."""
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        if self.error is not None:
            return
        self._buffer += data
        try:
            while (reply := self._parse()) is not None:
                self.replies.append(reply)
        except aiosmtplib.SMTPResponseException as exc:
            self.error = exc
        if len(self._buffer) > _MAX_REPLY:
            self.error = aiosmtplib.SMTPResponseException(-1, "Response too long")
        self._wake()

    def _parse(self) -> aiosmtplib.SMTPResponse | None:
        """The first complete reply in the buffer, taken out of it; None if there is none.
        As aiosmtplib's `SMTPProtocol._read_response_from_buffer`."""
        buffer = self._buffer
        offset = 0
        message = bytearray()
        while (end := buffer.find(b"\n", offset)) != -1:
            line = bytes(buffer[offset : end + 1])
            if len(line) > _MAX_LINE:
                raise aiosmtplib.SMTPResponseException(-1, "Response too long")
            try:
                code = int(line[:3])
            except ValueError:
                text = line.decode("utf-8", errors="ignore")
                raise aiosmtplib.SMTPResponseException(
                    -1, f"Malformed SMTP response line: {text}"
                ) from None
            offset = end + 1
            if message:  # as aiosmtplib: empty lines before any text leave no line break
                message += b"\n"
            message += line[4:].strip(b" \t\r\n")
            if line[3:4] != b"-":
                del buffer[:offset]
                return aiosmtplib.SMTPResponse(code, message.decode("utf-8", "surrogateescape"))
        return None

    def eof_received(self) -> bool:
        self._lost(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        error = aiosmtplib.SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self._lost(error)
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _lost(self, error: aiosmtplib.SMTPException) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def next(self, seconds: float | None) -> aiosmtplib.SMTPResponse:
        """The next reply; SMTPServerDisconnected (or the malformed reply's error) if none
        will come, SMTPReadTimeoutError after `seconds` without one."""
        if not self.replies:
            if self.error is None:
                self._waiter = self._loop.create_future()
                try:
                    await _within(self._waiter, seconds, "Timed out waiting for server response")
                finally:
                    self._waiter = None
            if not self.replies:  # woken by an error
                raise self.error or aiosmtplib.SMTPServerDisconnected("Connection lost")
        return self.replies.popleft()

    async def drain(self, seconds: float | None) -> None:
        """Return when the transport takes writes again (at once unless it is paused)."""
        if self._paused:
            self._drained = self._loop.create_future()
            try:
                message = f"the upstream took none of the message for {seconds} s"
                await _within(self._drained, seconds, message)
            finally:
                self._drained = None


async def _within(waiter: asyncio.Future[None], seconds: float | None, message: str) -> None:
    """Wait for `waiter`; SMTPReadTimeoutError(message) after `seconds`."""
    if seconds is None:
        await waiter
        return
    timer = asyncio.get_running_loop().call_later(seconds, _expire, waiter, message)
    try:
        await waiter
    finally:
        timer.cancel()


def _expire(waiter: asyncio.Future[None], message: str) -> None:
    if not waiter.done():
        waiter.set_exception(aiosmtplib.SMTPReadTimeoutError(message))


class Session:
    """One connection to the upstream, taken over from the aiosmtplib client that opened it
    (greeted, TLS and AUTH done, EHLO answered): its transactions and its QUIT."""

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        # aiosmtplib writes to it, so it is a write transport (uvloop's is not registered as
        # an asyncio.Transport, hence no isinstance check).
        transport = cast(asyncio.Transport | None, client.transport)
        if transport is None or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        self.extensions = frozenset(client.esmtp_extensions)
        """What the upstream's EHLO offered, lower-cased (`size`, `pipelining`, …)."""
        self.pipelining = "pipelining" in self.extensions
        self._replies = _Replies(asyncio.get_running_loop())
        # The session is idle after EHLO (the upstream speaks only when spoken to), so nothing
        # aiosmtplib's protocol would still read is lost. The client is left unconnected.
        transport.set_protocol(self._replies)
        self._transport: asyncio.Transport | None = transport
        client.transport = None
        client.protocol = None

    def supports(self, extension: str) -> bool:
        """Whether the upstream's EHLO offered `extension` (any case)."""
        return extension.lower() in self.extensions

    @property
    def usable(self) -> bool:
        """Connected, and the upstream said nothing unasked (a 421 before it hung up)."""
        return (
            self._transport is not None
            and not self._transport.is_closing()
            and self._replies.error is None
            and not self._replies.replies
        )

    def close(self) -> None:
        """Close at once (after an error, or when cancelled mid-conversation)."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def quit(self, seconds: float) -> None:
        """QUIT, politely; then closed whatever the upstream answered."""
        try:
            self._write(b"QUIT\r\n")
            await self._replies.next(seconds)
        except (aiosmtplib.SMTPException, OSError):
            pass  # closing anyway
        finally:
            self.close()

    def _write(self, octets: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._transport.write(octets)

    async def send(
        self,
        sender: str,
        recipient: str,
        pieces: Sequence[bytes],
        options: Sequence[str],
        *,
        seconds: float | None,
    ) -> None:
        """One mail transaction: MAIL with `options`, RCPT, DATA and the message in its DATA
        form (`pieces`, the last ending with the terminating dot; see `smtp_data`).

        Returns when the upstream accepted the message. Raises as aiosmtplib's `sendmail`
        does; every wait for the upstream gives up after `seconds`. After an error other
        than a refusal the session is closed (its state is unknown).
        """
        encoding = "utf-8" if any(o.lower() == "smtputf8" for o in options) else "ascii"
        mail = b" ".join([b"MAIL FROM:" + mailbox(sender, encoding), *map(str.encode, options)])
        rcpt = b"RCPT TO:" + mailbox(recipient, encoding)
        commands = (mail + b"\r\n", rcpt + b"\r\n", b"DATA\r\n")
        try:
            refusal = await self._envelope(commands, sender, recipient, seconds)
            if refusal is not None:
                raise refusal
            await self._data(pieces, seconds)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()
            raise
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == _CLOSING:
                self.close()
            raise

    async def _envelope(
        self,
        commands: tuple[bytes, bytes, bytes],
        sender: str,
        recipient: str,
        seconds: float | None,
    ) -> aiosmtplib.SMTPResponseException | None:
        """MAIL, RCPT and DATA, in one write with PIPELINING, else each after the reply to the
        one before. None when DATA was answered 354; else the first refusal, the transaction
        ended (a lone "." if the upstream took DATA anyway, then RSET)."""
        replies: list[aiosmtplib.SMTPResponse] = []
        refusal: aiosmtplib.SMTPResponseException | None = None
        try:
            if self.pipelining:
                self._write(b"".join(commands))
                for _ in commands:
                    replies.append(await self._replies.next(seconds))
                    refusal = refusal or _refusal(replies, sender, recipient)
            else:
                for command in commands:
                    self._write(command)
                    replies.append(await self._replies.next(seconds))
                    if refusal := _refusal(replies, sender, recipient):
                        break
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as exc:
            if refusal is None:
                raise
            raise refusal from exc  # the upstream's reason, rather than that it hung up
        if refusal is None:
            return None
        if refusal.code != _CLOSING:
            await self._end(
                took_data=len(replies) == 3 and replies[2].code == _START_INPUT, seconds=seconds
            )
        return refusal

    async def _end(self, *, took_data: bool, seconds: float | None) -> None:
        """End a refused transaction: a lone "." if DATA was taken (RFC 2920 3.1), then RSET;
        what the upstream answers to either changes nothing (as in aiosmtplib's sendmail)."""
        try:
            if took_data:
                self._write(b".\r\n")
                await self._replies.next(seconds)
            self._write(b"RSET\r\n")
            await self._replies.next(seconds)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()

    async def _data(self, pieces: Sequence[bytes], seconds: float | None) -> None:
        """The message after the 354, then the upstream's reply to the terminating dot."""
        for piece in pieces[:-1]:
            self._write(piece)
            await self._replies.drain(seconds)
        # No await between the last write and reading the reply: nothing is lost either
        # way (replies queue), but this keeps the session's only wait where the reply is.
        self._write(pieces[-1])
        reply = await self._replies.next(seconds)
        if reply.code != _COMPLETED:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)


def _refusal(
    replies: list[aiosmtplib.SMTPResponse], sender: str, recipient: str
) -> aiosmtplib.SMTPResponseException | None:
    """The refusal the latest of the replies to MAIL, RCPT and DATA (in that order) is, if any."""
    reply = replies[-1]
    step = len(replies)
    if step == 1 and reply.code != _COMPLETED:
        return aiosmtplib.SMTPSenderRefused(reply.code, reply.message, sender)
    if step == 2 and reply.code not in (_COMPLETED, aiosmtplib.SMTPStatus.will_forward):
        return aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, recipient)
    if step == 3 and reply.code != _START_INPUT:
        return aiosmtplib.SMTPDataError(reply.code, reply.message)
    return None
