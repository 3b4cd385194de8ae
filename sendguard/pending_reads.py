"""What a decision reads, with the messages decided before it in the same request and not
committed yet (`Intake.accept_many`).

The messages of one ESP request are judged one after the other and committed together, in
one transaction. A message judged later in the request must see those judged before it as
if they were committed (a 1/day cap delays the second message to one person, a domain cap
counts the request's earlier messages to that domain, a campaign threshold counts them): this
view answers every read of the store with its rows and the request's pending ones, as the
store would answer once they are committed (`SqlIntake.add_messages` writes the same rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sendguard.address import domain_of, recipient_key
from sendguard.approvals import Campaign, ContentApproval, GlobalPause
from sendguard.deliveries import HistoryEntry, NewDelivery
from sendguard.events import Event
from sendguard.facts import Fact
from sendguard.message import DeliveryState, Message, MessageClass
from sendguard.recipient import RecipientReads
from sendguard.resend import Copy, CopyQuery
from sendguard.store.base import PolicyReads
from sendguard.suppressions import Suppression


class _Pending:
    """One delivery decided and not committed yet: what the store's rows would say of it."""

    __slots__ = (
        "campaign",
        "content_hash",
        "domain",
        "entry",
        "id",
        "message_id",
        "recipient_key",
        "resend_key",
    )

    def __init__(self, message: Message, new: NewDelivery) -> None:
        fields = message.fields
        self.id = new.id
        self.message_id = message.id
        self.recipient_key = recipient_key(new.recipient)
        self.resend_key = new.resend_key
        self.campaign = fields.campaign
        self.content_hash = message.content_hash
        self.domain = domain_of(new.recipient)
        # The history row intake writes for a queued delivery (sql_intake.py).
        self.entry = (
            HistoryEntry(
                new.id,
                recipient_key(new.recipient),
                fields.campaign,
                fields.message_class,
                message.content_hash,
                message.received_at,
                False,
                fields.offer,
            )
            if new.state is DeliveryState.QUEUED
            else None
        )


class PendingReads(PolicyReads):
    """`store`'s reads as they will be once the deliveries `add` was given are committed."""

    def __init__(self, store: PolicyReads) -> None:
        self._store = store
        self._pending: list[tuple[_Pending, datetime]] = []
        # The history entries by recipient key: every decision reads its recipient's.
        self._entries: dict[str, list[HistoryEntry]] = {}
        self._contents: dict[str, bytes] = {}

    def add(self, message: Message, content: bytes, deliveries: Sequence[NewDelivery]) -> None:
        """`message`, decided: the next decisions read its deliveries as committed."""
        self._contents[message.id] = content
        for new in deliveries:
            pending = _Pending(message, new)
            self._pending.append((pending, message.received_at))
            if pending.entry is not None:
                self._entries.setdefault(pending.entry.recipient, []).append(pending.entry)

    def _history(self, key: str, since: datetime) -> list[HistoryEntry]:
        return [h for h in self._entries.get(key, ()) if h.at >= since]

    async def get_fact(self, key: str, contact: str | None = None) -> Fact | None:
        return await self._store.get_fact(key, contact)

    async def history(
        self, recipient: str, since: datetime, *, campaign: str | None = None
    ) -> Sequence[HistoryEntry]:
        found = await self._store.history(recipient, since, campaign=campaign)
        more = [
            h
            for h in self._history(recipient_key(recipient), since)
            if campaign is None or h.campaign == campaign
        ]
        return [*found, *more] if more else found

    async def send_times(
        self,
        since: datetime,
        *,
        recipient: str | None = None,
        domain: str | None = None,
        campaign: str | None = None,
        exclude_classes: Sequence[MessageClass] = (),
        limit: int = 100,
    ) -> Sequence[datetime]:
        found = await self._store.send_times(
            since,
            recipient=recipient,
            domain=domain,
            campaign=campaign,
            exclude_classes=exclude_classes,
            limit=limit,
        )
        key = recipient_key(recipient) if recipient else None
        wanted = domain.lower() if domain else None
        more = [
            p.entry.at
            for p, _ in reversed(self._pending)  # newest first, as the store answers
            if p.entry is not None
            and p.entry.at >= since
            and (key is None or p.entry.recipient == key)
            and (wanted is None or p.domain == wanted)
            and (campaign is None or p.campaign == campaign)
            and p.entry.message_class not in exclude_classes
        ]
        if not more:
            return found
        return sorted([*more, *found], reverse=True)[:limit]

    async def events(self, recipient: str, since: datetime | None = None) -> Sequence[Event]:
        return await self._store.events(recipient, since)

    async def get_suppression(self, address: str) -> Suppression | None:
        return await self._store.get_suppression(address)

    def _copies(self, key: str, query: CopyQuery) -> list[Copy]:
        return [
            Copy(p.message_id, p.id, at)
            for p, at in self._pending
            if p.resend_key == query.key and p.recipient_key == key and at >= query.since
        ]

    async def earlier_copies(self, recipient: str, query: CopyQuery) -> Sequence[Copy]:
        found = await self._store.earlier_copies(recipient, query)
        return [*found, *self._copies(recipient_key(recipient), query)]

    async def recipient_reads(
        self,
        recipient: str,
        *,
        history_since: datetime | None,
        events_since: datetime | None,
        copies: CopyQuery | None = None,
    ) -> RecipientReads:
        found = await self._store.recipient_reads(
            recipient, history_since=history_since, events_since=events_since, copies=copies
        )
        key = recipient_key(recipient)
        more = [] if history_since is None else self._history(key, history_since)
        copied = [] if copies is None else self._copies(key, copies)
        if not more and not copied:
            return found
        return RecipientReads(
            [*found.history, *more],
            found.events,
            found.suppression,
            found.timezone,
            (*found.copies, *copied),
        )

    async def get_campaign(self, name: str) -> Campaign | None:
        return await self._store.get_campaign(name)

    async def count_campaign(
        self, name: str, since: datetime, *, at_most: int | None = None
    ) -> int:
        found = await self._store.count_campaign(name, since, at_most=at_most)
        more = sum(1 for p, at in self._pending if p.campaign == name and at >= since)
        return found + more if at_most is None else min(found + more, at_most)

    async def approvals(self, campaign: str) -> Sequence[ContentApproval]:
        return await self._store.approvals(campaign)

    async def count_content(
        self,
        content_hash: str,
        *,
        since: datetime | None = None,
        campaign: str | None = None,
        before: str | None = None,
        exclude_message: str | None = None,
        at_most: int | None = None,
    ) -> int:
        found = await self._store.count_content(
            content_hash,
            since=since,
            campaign=campaign,
            before=before,
            exclude_message=exclude_message,
            at_most=at_most,
        )
        more = sum(
            1
            for p, at in self._pending
            if p.content_hash == content_hash
            and (since is None or at >= since)
            and (campaign is None or p.campaign == campaign)
            and (before is None or p.id < before)
            and (exclude_message is None or p.message_id != exclude_message)
        )
        return found + more if at_most is None else min(found + more, at_most)

    async def message_content(self, message_id: str) -> bytes:
        kept = self._contents.get(message_id)
        return kept if kept is not None else await self._store.message_content(message_id)

    async def get_pause(self) -> GlobalPause:
        return await self._store.get_pause()
