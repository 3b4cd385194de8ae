"""The replay: recorded traffic, in time order, through a candidate config's policies.

The real Intake and Engine judge each message in a scratch SQLite store, with a simulated
clock set to the time each item arrived. Between arrivals, what came due is handled as the
dispatcher would: a delayed delivery is judged again, a forwarded one counts as sent. Nothing
is sent anywhere and no review happens: a held delivery stays held.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from sendguard.address import remembering_valid_addresses
from sendguard.config import Settings
from sendguard.deliveries import Change
from sendguard.engine import Engine, PolicyBinding
from sendguard.events import Event
from sendguard.intake import Intake
from sendguard.message import DeliveryState
from sendguard.metrics import Metrics
from sendguard.simulate.source import Recorded, RecordedEvent, RecordedFact, RecordedMessage, at_of
from sendguard.simulate.store import ReplayStore
from sendguard.store.base import Store
from sendguard.store.codec import MessageCache, as_stored, caching_messages
from sendguard.store.sqlite import SQLiteStore
from sendguard.testing import FakeClock
from sendguard.verdict import Action, Decision, Mode

_OWNER = "simulate"
_LEASE = timedelta(hours=1)
_SENDABLE = frozenset({DeliveryState.QUEUED})
# Where a replayed delivery stays once there: its final state needs no look-up at the end.
_ENDED = frozenset({DeliveryState.SENT, DeliveryState.DROPPED})


@dataclass(frozen=True)
class Replayed:
    """One recipient of one recorded message: what was decided then and what would be now."""

    recipient: str
    subject: str
    campaign: str | None
    at: datetime
    then: Action
    would: Action
    until: datetime | None
    policy: str | None
    """The enforcing policy behind the candidate's verdict (None for a forward)."""
    reason: str
    final: DeliveryState
    """Where the delivery ended in the replay (a delay may have been forwarded later)."""
    source_id: str | None
    engaged: bool = False
    """The recipient opened or clicked this message (or, when the source names no message,
    anything) after it arrived."""


def _deciding_policy(decision: Decision) -> str | None:
    verdict = decision.verdict
    if verdict.action is Action.FORWARD:
        return None
    for outcome in decision.outcomes:
        if outcome.mode is Mode.ENFORCE and outcome.verdict is verdict:
            return outcome.policy
    return None


class Replay:
    """Replays recorded items through `bindings` in a scratch store under `directory`."""

    def __init__(
        self, settings: Settings, bindings: Sequence[PolicyBinding], *, shortcuts: bool = True
    ) -> None:
        """`shortcuts=False` replays the long way: every message parsed and hashed, every
        stored message decoded at each read, every forward claimed as the dispatcher would,
        every policy read from SQL (not `ReplayStore`'s memory). Same result, slower; tests
        compare the two."""
        self._settings = settings
        self._bindings = bindings
        self._shortcuts = shortcuts
        self._ended: dict[str, DeliveryState] = {}  # scratch delivery id -> where it ended
        # Forwarded at intake, not yet counted as sent (see `_send_forwarded`).
        self._forwarded: list[str] = []

    async def run(self, items: Sequence[Recorded], until: datetime | None = None) -> list[Replayed]:
        """Replay `items` (sorted here by arrival) and what comes due up to `until`."""
        ordered = sorted(items, key=at_of)
        with tempfile.TemporaryDirectory(prefix="sendguard-simulate-") as scratch:
            path = Path(scratch) / "replay.db"
            store = ReplayStore(path) if self._shortcuts else SQLiteStore(path, scratch=True)
            await store.open()
            try:
                if not self._shortcuts:
                    return await self._replay(store, ordered, until, None)
                with caching_messages() as cache, remembering_valid_addresses():
                    return await self._replay(store, ordered, until, cache)
            finally:
                await store.close()

    async def _replay(
        self,
        store: Store,
        items: Sequence[Recorded],
        until: datetime | None,
        cache: MessageCache | None,
    ) -> list[Replayed]:
        self._ended = {}
        self._forwarded = []
        start = at_of(items[0]) if items else None
        clock = FakeClock(start) if start else FakeClock()
        metrics = Metrics()
        # No hold expiry: nobody reviews in a replay, so a held delivery stays held.
        # A replay is no traffic: nothing of it is logged or counted in the metrics.
        engine = Engine(self._bindings, store, clock, metrics, hold_expiry=None, record=False)
        config = self._settings.config
        intake = Intake(
            engine,
            store,
            clock,
            metrics,
            config.headers.sources(),
            on_queued=lambda: None,
            host_name=config.smtp.hostname or "simulate.invalid",
            resend_window=config.smtp.resend_window,
        )
        replayed: dict[str, Replayed] = {}  # by scratch delivery id
        scratch_ids: dict[str, str] = {}  # source message id -> scratch message id
        for item in items:
            at = at_of(item)
            await self._due(store, engine, clock, at)
            clock.set(max(at, clock.now()))
            if isinstance(item, RecordedMessage):
                accepted = await intake.accept(
                    item.content,
                    item.mail_from,
                    item.recipients,
                    "simulate",
                    fingerprint=item.fingerprint if cache is not None else None,
                    # An SMTP client's retransmission is dropped in the replay as it was.
                    resend=item.ingress == "smtp",
                )
                if cache is not None:
                    self._forwarded.extend(
                        d.id for d in accepted.deliveries if d.state in _SENDABLE
                    )
                    # The message as committed: its deliveries are read back after each change.
                    cache.put(as_stored(accepted.message))
                if item.source_id is not None:
                    scratch_ids[item.source_id] = accepted.message.id
                for new in accepted.deliveries:
                    replayed[new.id] = Replayed(
                        recipient=new.recipient,
                        subject=accepted.message.subject,
                        campaign=accepted.message.fields.campaign,
                        at=accepted.message.received_at,
                        then=item.then.get(new.recipient, Action.FORWARD),
                        would=new.decision.verdict.action,
                        until=new.due_at if new.state is DeliveryState.DELAYED else None,
                        policy=_deciding_policy(new.decision),
                        reason=new.reason,
                        final=new.state,
                        source_id=item.source_id,
                    )
            elif isinstance(item, RecordedEvent):
                event = item.event
                mapped = scratch_ids.get(event.message_id) if event.message_id else None
                await store.add_event(
                    Event(event.type, event.recipient, event.at, mapped, event.offer)
                )
            elif isinstance(item, RecordedFact):
                await store.put_fact(item.fact)
                await store.wake_waiting(
                    clock.now(), fact_key=item.fact.key, contact=item.fact.contact
                )
        if until is not None:
            await self._due(store, engine, clock, until)
        return await self._finish(store, replayed, items)

    async def _send_forwarded(self, store: Store, now: datetime) -> None:
        """Count what intake forwarded as sent, at `now` (still the time it arrived).

        What the dispatcher would claim first: it is due at its arrival, and whatever was due
        before was handled before that arrival. So it is sent here without the claim (a query
        and a decoded row per delivery), in the same order and at the same time as `_due`
        would send it; the same report, as tests/unit/test_simulate.py checks. The replay's
        own store does it in one statement (`ReplayStore.send_queued`).
        """
        forwarded, self._forwarded = self._forwarded, []
        if isinstance(store, ReplayStore):
            await store.send_queued(forwarded, now)
        else:
            for delivery_id in forwarded:
                await store.change(
                    delivery_id,
                    Change(
                        DeliveryState.SENT,
                        "simulated send",
                        now,
                        expect=_SENDABLE,
                        attempt=True,
                    ),
                )
        for delivery_id in forwarded:
            self._ended[delivery_id] = DeliveryState.SENT

    async def _due(self, store: Store, engine: Engine, clock: FakeClock, upto: datetime) -> None:
        """Handle, in time order, what comes due up to `upto`, as the dispatcher would."""
        if self._forwarded and clock.now() <= upto:
            await self._send_forwarded(store, clock.now())
        while (due := await store.next_due_at()) is not None and due <= upto:
            clock.set(max(due, clock.now()))
            now = clock.now()
            for claimed in await store.claim_due(now, _OWNER, 500, _LEASE):
                delivery = claimed
                if delivery.state is DeliveryState.DELAYED:
                    async with store.lock_recipients([delivery.recipient]):
                        decision = await engine.decide(delivery)
                        step = engine.plan(decision, now)
                        delivery = await store.change(
                            delivery.id,
                            Change(
                                step.state,
                                step.reason,
                                now,
                                expect=frozenset({DeliveryState.DELAYED}),
                                owner=_OWNER,
                                due_at=step.due_at,
                                decision=decision,
                                keep_claim=step.state is DeliveryState.QUEUED,
                                hold_origin=step.hold_origin,
                            ),
                        )
                        if delivery.state in _ENDED:
                            self._ended[delivery.id] = delivery.state
                if delivery.state in _SENDABLE:
                    # Straight to sent, one write: nothing is sent, so there is no attempt
                    # in between to record (the dispatcher's `sending` step).
                    await store.change(
                        delivery.id,
                        Change(
                            DeliveryState.SENT,
                            "simulated send",
                            now,
                            expect=_SENDABLE,
                            owner=_OWNER,
                            attempt=True,
                        ),
                    )
                    self._ended[delivery.id] = DeliveryState.SENT
                elif delivery.state not in (
                    DeliveryState.DELAYED,
                    DeliveryState.HELD,
                    DeliveryState.DROPPED,
                ):
                    await store.release([delivery.id], _OWNER)

    async def _finish(
        self, store: Store, replayed: dict[str, Replayed], items: Sequence[Recorded]
    ) -> list[Replayed]:
        """Each delivery with its final replay state and whether it was engaged with."""
        engaged_any: dict[str, list[datetime]] = {}
        engaged_msg: set[tuple[str, str]] = set()
        for item in items:
            if isinstance(item, RecordedEvent) and item.event.type in ("open", "click"):
                event = item.event
                key = event.recipient.lower()
                if event.message_id is None:
                    engaged_any.setdefault(key, []).append(event.at)
                else:
                    engaged_msg.add((key, event.message_id))
        out = []
        for delivery_id, row in replayed.items():
            final = self._ended.get(delivery_id) or (row.final if row.final in _ENDED else None)
            if final is None:  # delayed, held or waiting at the end: as the store has it now
                current = await store.get_delivery(delivery_id)
                final = current.state if current else row.final
            key = row.recipient.lower()
            engaged = (row.source_id is not None and (key, row.source_id) in engaged_msg) or any(
                at >= row.at for at in engaged_any.get(key, ())
            )
            out.append(replace(row, final=final, engaged=engaged))
        return sorted(out, key=lambda r: (r.at, r.recipient))
