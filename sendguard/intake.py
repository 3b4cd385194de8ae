"""Intake: what every ingress does with a complete message, whichever protocol brought it.

Validate the envelope, read the headers (never the body), judge each recipient with the
engine, and commit the message with its deliveries and decisions in one transaction. Only
then may the ingress answer success. The per-recipient lock spans deciding and committing, so
concurrent messages to one person are judged one after the other and caps hold.
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import structlog

from sendguard.address import recipient_key, validate_address
from sendguard.clock import Clock
from sendguard.content import Fingerprint, fingerprints
from sendguard.deliveries import (
    IdempotencyRecord,
    IntakeClaim,
    NewDelivery,
    NewMessage,
    sends_now,
)
from sendguard.engine import Engine
from sendguard.errors import (
    IdempotencyKeyReused,
    InvalidAddress,
    InvalidMessage,
    StoreUnavailable,
)
from sendguard.esp_request import EspRequest
from sendguard.fields import FIELDS, NULL_SENDER_DEFAULTS, FieldOverrides, read_fields
from sendguard.headers import (
    Headers,
    Trace,
    format_date,
    header_end,
    read_incoming,
    received_line,
    stamp,
    strip_unforwarded_headers,
)
from sendguard.ids import new_id
from sendguard.message import Delivery, DeliveryState, Message, SendguardFields
from sendguard.metrics import Metrics
from sendguard.offload import LARGE, in_process
from sendguard.pending_reads import PendingReads
from sendguard.resend import CopyQuery, client_message_id, resend_key
from sendguard.store.base import IntakeWrites

log = structlog.get_logger("sendguard.intake")


IDEMPOTENCY_RETENTION = timedelta(hours=24)
"""How long an Idempotency-Key keeps returning its first answer."""


@dataclass(frozen=True)
class Accepted:
    """A committed message and how each of its deliveries was decided."""

    message: Message
    deliveries: tuple[NewDelivery, ...]

    @property
    def all_dropped(self) -> bool:
        """True when no recipient will ever get this message."""
        return all(d.state is DeliveryState.DROPPED for d in self.deliveries)


def idempotency_scope(identity: str, key: str) -> str:
    """The key under which a client's Idempotency-Key is kept: each authenticated identity has
    its own keys (as the IETF draft scopes them per client), so two tokens that happen to pick
    the same key never get each other's answers. Identity names contain no blank."""
    return f"{identity} {key}"


@dataclass(frozen=True)
class Idempotency:
    """An Idempotency-Key and how to render the answer that is stored for it."""

    key: str
    respond: Callable[[Accepted], bytes]
    fingerprint: str | None = None
    """A digest of the request; the key answers only requests with the same one."""
    retention: timedelta = IDEMPOTENCY_RETENTION
    """How long the answer is kept for the key (the ESP endpoints' retry window is shorter)."""


@dataclass(frozen=True)
class ManyIdempotency:
    """`Idempotency` for a request of several messages (`Intake.accept_many`): its answer is
    rendered from all of them and committed with them."""

    key: str
    respond: Callable[[Sequence[Accepted]], bytes]
    fingerprint: str | None = None
    retention: timedelta = IDEMPOTENCY_RETENTION


class Claimer(Protocol):
    """Who sends deliveries claimed as they are committed (the dispatcher of this process)."""

    async def caught_up(self) -> None:
        """Return once `reserve` can tell whether there is room (a claim in flight may
        decide it)."""
        ...

    def reserve(self, count: int) -> IntakeClaim | None:
        """A claim for `count` deliveries, or None if there is no room for them now."""
        ...

    def hand_over(self, deliveries: Sequence[Delivery]) -> None:
        """Send these deliveries, committed under the claim `reserve` gave."""
        ...

    def cancel(self, count: int) -> None:
        """The commit failed: give back the room `reserve` kept."""
        ...


_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})


def _bulk(headers: Headers) -> bool:
    """Whether a message carries the marks of mail sent to a list: `List-Unsubscribe`
    (RFC 2369, RFC 8058's one-click `List-Unsubscribe-Post`) or `Precedence: bulk | list |
    junk` on a message that says it is not automatic. A bounce (RFC 3464) carries neither,
    and nobody unsubscribes from a DSN; an auto-reply (RFC 3834: `Auto-Submitted` other than
    `no`) often carries `Precedence: bulk` or `junk` (Sieve vacation, vacation(1)) so that no
    other responder answers it, which makes it no newsletter."""
    if headers.get("List-Unsubscribe") is not None:
        return True
    if headers.get("List-Unsubscribe-Post") is not None:
        return True
    precedence = headers.get("Precedence")
    if precedence is None or precedence.strip().lower() not in _BULK_PRECEDENCE:
        return False
    submitted = headers.get("Auto-Submitted")
    # Its keyword before any comment: `auto-replied (vacation)`, `no (a person wrote it)`.
    return submitted is None or submitted.partition("(")[0].strip().lower() == "no"


class Intake:
    """Accepts messages from any ingress.

    With a `claimer`, the deliveries to be sent at once are committed already claimed by it
    and handed to it in memory: no separate claim transaction, wake-up or look for what is
    due (`IntakeWrites.add_message`'s `claim`). Without room there, they are committed
    unclaimed and `on_queued` says work is due.
    """

    def __init__(
        self,
        engine: Engine,
        store: IntakeWrites,
        clock: Clock,
        metrics: Metrics,
        header_sources: Mapping[str, Sequence[str]],
        on_queued: Callable[[], None],
        host_name: str | None = None,
        claimer: Claimer | None = None,
        resend_window: timedelta = timedelta(0),
    ) -> None:
        """`resend_window` (`smtp.resend_window`): how long a message accepted with `resend`
        is looked for when its client sends it again (sendguard/resend.py); 0: not at all."""
        self._engine = engine
        self._resend_window = resend_window
        # The `by` of Received lines and the domain of the Message-IDs added here.
        self._host_name = host_name or socket.getfqdn()
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._on_queued = on_queued
        self._claimer = claimer
        self.reconfigure(header_sources)

    def reconfigure(self, header_sources: Mapping[str, Sequence[str]]) -> None:
        """Read the sendguard fields from these headers for every message from now on."""
        # A message with none of the headers any field is read from (an HTTP send, whose
        # fields come from its JSON) has the fields of no headers: they are known up front,
        # and looking up every source of every field (some 25 names) is skipped for it.
        self._field_headers = frozenset(
            name.lower()
            for spec in FIELDS
            for name in header_sources.get(spec.json_name, spec.headers)
        )
        self._no_fields = read_fields(Headers(()), header_sources)
        self._no_fields_of_bounce = read_fields(Headers(()), header_sources, NULL_SENDER_DEFAULTS)
        self._sources = header_sources

    def _fields(self, headers: Headers, mail_from: str) -> SendguardFields:
        """The sendguard fields `headers` give (`read_fields` with the configured sources);
        a bounce's (the null sender) default to `NULL_SENDER_DEFAULTS`."""
        sources = self._field_headers
        defaults = None if mail_from else NULL_SENDER_DEFAULTS
        if any(name.lower() in sources for name, _ in headers.items):
            return read_fields(headers, self._sources, defaults)
        return self._no_fields if mail_from else self._no_fields_of_bounce

    def _message_fields(
        self, headers: Headers, mail_from: str, overrides: FieldOverrides | None
    ) -> SendguardFields:
        """The message's fields: its headers' with the payload's `overrides` applied. A message
        with the null sender that names a campaign, or carries the marks of bulk mail
        (`_bulk`), is no bounce (no MTA puts either on a DSN): a marketing tool sending with
        `MAIL FROM:<>` would otherwise pass as transactional, exempt from the caps and from
        human_hold's approval. It takes the class its headers or payload give, marketing by
        default, as with a sender address."""
        given = overrides or FieldOverrides()
        fields = given.apply(self._fields(headers, mail_from))
        if not mail_from and (fields.campaign is not None or _bulk(headers)):
            fields = given.apply(self._fields(headers, "<campaign>"))
        return fields

    async def replay(self, key: str, fingerprint: str | None = None) -> bytes | None:
        """The first answer given to a request with Idempotency-Key `key`, if still kept.

        Raise IdempotencyKeyReused when that request had another fingerprint: the key was
        reused for a different message, which must not be answered as if it were created.
        """
        record = await self._store.idempotent_response(
            key, self._clock.now() - IDEMPOTENCY_RETENTION
        )
        if record is None:
            return None
        if fingerprint is not None and record.fingerprint not in (None, fingerprint):
            raise IdempotencyKeyReused(key)
        return record.response

    async def _commit(self, items: Sequence[NewMessage], record: IdempotencyRecord | None) -> None:
        """Commit the messages together; hand what is to be sent at once to the claimer if it
        has room (committed claimed by it), else say that work is due."""
        now_due = [
            (item.message, new)
            for item in items
            for new in item.deliveries
            if sends_now(new, item.message.received_at)
        ]
        claimer = self._claimer if now_due else None
        if claimer is not None:
            await claimer.caught_up()
        claim = None if claimer is None else claimer.reserve(len(now_due))
        try:
            if len(items) == 1:
                item = items[0]
                await self._store.add_message(
                    item.message,
                    item.content,
                    item.deliveries,
                    record,
                    item.esp_request,
                    claim=claim,
                )
            else:
                await self._store.add_messages(items, record, claim=claim)
        except BaseException:
            if claimer is not None and claim is not None:
                claimer.cancel(len(now_due))
            raise
        if claimer is not None and claim is not None:
            # As `claim_due` would have given them back.
            claimer.hand_over(
                [
                    Delivery(
                        new.id,
                        message,
                        new.recipient,
                        DeliveryState.SENDING,
                        message.received_at,
                        message.received_at,
                        due_at=new.due_at,
                        attempts=1,
                        first_attempt_at=message.received_at,
                    )
                    for message, new in now_due
                ]
            )
        decided = [new for item in items for new in item.deliveries]
        queued = sum(new.state is DeliveryState.QUEUED for new in decided)
        if queued > (len(now_due) if claim is not None else 0):
            self._on_queued()
        dropped = sum(new.state is DeliveryState.DROPPED for new in decided)
        if dropped:  # an outcome reached at intake, as the dispatcher counts one it reaches
            self._metrics.deliveries_outcomes.labels(outcome="dropped").inc(dropped)

    async def accept(
        self,
        raw: bytes,
        mail_from: str,
        recipients: Sequence[str],
        ingress: str,
        *,
        overrides: FieldOverrides | None = None,
        idempotency: Idempotency | None = None,
        smtputf8: bool = False,
        body_8bit: bool = False,
        trace: Trace | None = None,
        esp_request: EspRequest | None = None,
        vet: Callable[[Message], None] | None = None,
        fingerprint: Fingerprint | None = None,
        headers: Headers | None = None,
        resend: bool = False,
    ) -> Accepted:
        """Judge and commit a message; raise InvalidMessage or StoreUnavailable.

        `overrides` replace fields read from the headers (the HTTP payload's `campaign`,
        `not_before`, ...). With `idempotency`, its answer is stored in the same transaction;
        Conflict means the key was used meanwhile (ask `replay`). `smtputf8` and `body_8bit`
        say what the SMTP client declared; content with 8-bit bytes counts as 8-bit anyway.
        With `trace`, the stored copy gets a `Received:` line; it gets `Date` and `Message-ID`
        where it has none, so every delivery carries the same ones. The content fingerprint
        is taken before: neither changes it. `esp_request` (the ESP request the message came
        in as) is committed with it. `vet` sees the message before it is judged and may refuse
        it by raising InvalidMessage (an ESP template with no upstream that can send it).
        `fingerprint` is the content's `fingerprints` when the caller already has them (a
        replay of stored messages, a message it built): taken as given instead of parsing the
        content again.
        `headers` are `raw`'s headers as `Headers.parse` reads them, when the caller has them
        (a message it wrote itself): taken as given instead of parsing the header block, and
        they tell `stamp` whether it has a `Date` and a `Message-ID`.
        With `resend` (SMTP: a client that missed the reply sends the message again, with no
        key of its own), a recipient who already got a copy of it within the resend window
        is not sent it twice (sendguard/resend.py).
        """
        prepared = await self.prepare(
            raw,
            mail_from,
            recipients,
            ingress,
            overrides=overrides,
            smtputf8=smtputf8,
            body_8bit=body_8bit,
            trace=trace,
            esp_request=esp_request,
            vet=vet,
            fingerprint=fingerprint,
            headers=headers,
        )
        message, content = prepared.message, prepared.content
        structlog.contextvars.bind_contextvars(message_id=message.id)
        copies = None
        if resend and len(content) > LARGE:
            # The body's CRC (zlib lets go of the GIL) in a thread: a 20 MB message's
            # would hold the loop for milliseconds.
            copies = await asyncio.to_thread(self._copies, message, content)
        elif resend:
            copies = self._copies(message, content)
        async with self._store.lock_recipients(
            message.recipients, campaign=message.fields.campaign
        ):
            decided = await self._decide(message, content, None, copies)
            record = None
            if idempotency is not None:
                answer = idempotency.respond(Accepted(message, tuple(decided)))
                record = IdempotencyRecord(
                    idempotency.key,
                    message.id,
                    answer,
                    message.received_at - idempotency.retention,
                    fingerprint=idempotency.fingerprint,
                )
            item = NewMessage(message, content, decided, esp_request)
            try:
                await self._commit([item], record)
            except StoreUnavailable as exc:
                self._metrics.kept(self._metrics.messages_refused, ingress, exc.kind).inc()
                raise
        self._metrics.kept(self._metrics.messages_received, ingress).inc()
        # The line on the loop's next turn: the ingress answers (250, 202) in this one, as soon
        # as this returns, and rendering and writing the line took ~30 µs of that answer at
        # idle (docs/performance.md, "One idle message's timeline"). It still follows the
        # commit, and carries the message id bound above (call_soon keeps the context).
        asyncio.get_running_loop().call_soon(
            functools.partial(
                log.info, "accepted", ingress=ingress, recipients=len(decided), size=message.size
            )
        )
        return Accepted(message, tuple(decided))

    def _copies(self, message: Message, content: bytes) -> CopyQuery | None:
        """What the resend check looks for when `message` (whose stored form is `content`)
        is sent again by its client: its key and how far back; None when the check is off or
        the client wrote no Message-ID (the one sendguard stamps is new every time)."""
        if not self._resend_window:
            return None
        message_id = client_message_id(message.headers.get("Message-ID"))
        if message_id is None:
            return None
        body = memoryview(content)[header_end(content) :]  # stamping changed headers only
        key = resend_key(
            message_id,
            message.mail_from,
            message.content_hash,
            message.links,
            body,
            message.headers.get("Content-Type"),
        )
        return CopyQuery(key, message.received_at - self._resend_window)

    async def _decide(
        self,
        message: Message,
        content: bytes,
        reads: PendingReads | None,
        copies: CopyQuery | None = None,
    ) -> list[NewDelivery]:
        """Judge each recipient of `message` (inside their lock), reading through `reads`;
        with `copies`, dropping a recipient's retransmission (`Engine.decide`)."""
        now = message.received_at
        decided = []
        for recipient in message.recipients:
            pending = Delivery(new_id(), message, recipient, DeliveryState.QUEUED, now, now)
            decision = await self._engine.decide(pending, content, reads, copies=copies)
            step = self._engine.plan(decision, now)
            decided.append(
                NewDelivery(
                    pending.id,
                    recipient,
                    step.state,
                    step.reason,
                    decision,
                    step.due_at,
                    step.hold_origin,
                    None if copies is None else copies.key,
                )
            )
        return decided

    async def accept_many(
        self,
        prepared: Sequence[NewMessage],
        ingress: str,
        *,
        idempotency: ManyIdempotency | None = None,
    ) -> list[Accepted]:
        """Judge and commit messages `prepare` made (one request's) together, in one
        transaction: all of them or none; raise StoreUnavailable, or Conflict when the
        idempotency key was used meanwhile (its answer is stored with them).

        They are judged in order, each seeing those before it as if committed (a cap on one
        person delays the request's second message to them), under the lock of all their
        recipients at once.
        """
        everyone = [r for item in prepared for r in item.message.recipients]
        accepted: list[Accepted] = []
        items: list[NewMessage] = []
        campaigns = {item.message.fields.campaign for item in prepared}
        async with self._store.lock_recipients(
            everyone, campaign=campaigns.pop() if len(campaigns) == 1 else None
        ):
            reads = PendingReads(self._engine.store)
            for item in prepared:
                message = item.message
                structlog.contextvars.bind_contextvars(message_id=message.id)
                decided = await self._decide(message, item.content, reads)
                reads.add(message, item.content, decided)
                accepted.append(Accepted(message, tuple(decided)))
                items.append(NewMessage(message, item.content, decided, item.esp_request))
            record = None
            if idempotency is not None and accepted:
                last = accepted[-1].message
                record = IdempotencyRecord(
                    idempotency.key,
                    last.id,
                    idempotency.respond(accepted),
                    last.received_at - idempotency.retention,
                    fingerprint=idempotency.fingerprint,
                )
            try:
                await self._commit(items, record)
            except StoreUnavailable as exc:
                counter = self._metrics.kept(self._metrics.messages_refused, ingress, exc.kind)
                counter.inc(len(items))
                raise
        for done in accepted:
            self._metrics.kept(self._metrics.messages_received, ingress).inc()
            log.info(
                "accepted",
                ingress=ingress,
                message_id=done.message.id,
                recipients=len(done.deliveries),
                size=done.message.size,
            )
        return accepted

    async def prepare(
        self,
        raw: bytes,
        mail_from: str,
        recipients: Sequence[str],
        ingress: str,
        *,
        overrides: FieldOverrides | None = None,
        smtputf8: bool = False,
        body_8bit: bool = False,
        trace: Trace | None = None,
        esp_request: EspRequest | None = None,
        vet: Callable[[Message], None] | None = None,
        fingerprint: Fingerprint | None = None,
        headers: Headers | None = None,
    ) -> NewMessage:
        """The message `accept` would judge (stamped, its fields read, vetted), not judged
        yet (no deliveries); raise InvalidMessage. See `accept` for the arguments."""
        if mail_from:  # the null reverse-path <> is valid (bounces)
            try:
                validate_address(mail_from)
            except InvalidAddress as exc:
                raise InvalidAddress(f"sender: {exc}", field="from") from None
        unique: dict[str, str] = {}
        for address in recipients:
            validate_address(address)
            unique.setdefault(recipient_key(address), address)
        if not unique:
            raise InvalidMessage("a message needs at least one recipient", field="to")
        written = headers  # a message the caller wrote: its headers tell `stamp` what it has
        present = None
        if headers is None:
            incoming = read_incoming(raw)  # the header block split once for all three
            headers, content = incoming.headers, incoming.content
            present = incoming.present
        else:
            content = strip_unforwarded_headers(raw)
        if fingerprint is None:
            # The Subject is read from `headers`: stripping removed no Subject.
            fingerprint = await in_process(
                len(content), functools.partial(fingerprints, headers=headers), content
            )
        now = self._clock.now()
        message_id = new_id()
        date = format_date(now)
        received = None
        if trace is not None:
            received = received_line(
                trace, self._host_name, message_id, tuple(unique.values()), date
            )
        content = stamp(
            content, received, date, f"<{message_id}@{self._host_name}>", written, present
        )
        message = Message(
            id=message_id,
            received_at=now,
            ingress=ingress,
            mail_from=mail_from,
            recipients=tuple(unique.values()),
            headers=headers,
            fields=self._message_fields(headers, mail_from, overrides),
            size=len(content),
            content_hash=fingerprint.text,
            smtputf8=smtputf8,
            body_8bit=body_8bit or not content.isascii(),
            links=fingerprint.links,
        )
        if vet is not None:
            vet(message)
        return NewMessage(message, content, (), esp_request)
