"""Review: what people do with held deliveries and campaigns, each action audited.

Approving lifts the human hold only: a released delivery becomes due now in `delayed`, so the
dispatcher judges it again with every policy before it leaves (an address that unsubscribed,
or a cap that filled, while it waited still counts). Pausing a campaign is the kill switch:
its unsent deliveries are held (origin `pause`) until it is resumed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sendguard.clock import Clock
from sendguard.errors import Conflict
from sendguard.message import Delivery, DeliveryState
from sendguard.store.base import Approval, AuditEntry, Campaign, Change, DeliveryQuery, Store

S = DeliveryState
_HELD = frozenset({S.HELD})
_UNSENT = frozenset({S.QUEUED, S.DELAYED, S.DEFERRED, S.HELD})
_WAITING = frozenset({S.QUEUED, S.DELAYED, S.DEFERRED})
_PAGE = 500


class NotFound(Conflict):
    """The delivery or campaign does not exist."""


@dataclass(frozen=True)
class Outcome:
    """What a campaign-wide action did."""

    campaign: Campaign
    count: int


class Review:
    """Review actions; `on_release` wakes the dispatcher when deliveries become due."""

    def __init__(self, store: Store, clock: Clock, on_release: Callable[[], None]) -> None:
        self._store = store
        self._clock = clock
        self._on_release = on_release

    async def _held(self, delivery_id: str) -> Delivery:
        delivery = await self._store.get_delivery(delivery_id)
        if delivery is None:
            raise NotFound(f"no delivery {delivery_id}")
        if delivery.state is not S.HELD:
            raise Conflict(f"delivery {delivery_id} is {delivery.state.value}, not held")
        return delivery

    async def approve_delivery(self, delivery_id: str, reviewer: str, note: str = "") -> Delivery:
        """Release one held delivery; every policy but the human hold and the context
        policy (for which the approval is an override: "I checked: send") judges it again now."""
        await self._held(delivery_id)
        steps = await self._store.transitions(delivery_id)
        # A context hold cannot be lifted by waiting longer: the approval overrides the
        # premise, and the record says so.
        overrides = bool(steps) and steps[-1].reason.startswith("context:")
        now = self._clock.now()
        changed = await self._store.change(
            delivery_id,
            Change(
                S.DELAYED,
                _why("override" if overrides else "approved", reviewer, note),
                now,
                expect=_HELD,
                due_at=now,
                approved_by=reviewer,
                override_by=reviewer if overrides else None,
            ),
        )
        await self._audit(reviewer, "approve", f"delivery:{delivery_id}", note, 1)
        self._on_release()
        return changed

    async def reject_delivery(self, delivery_id: str, reviewer: str, note: str = "") -> Delivery:
        """Drop one held delivery."""
        await self._held(delivery_id)
        changed = await self._store.change(
            delivery_id,
            Change(
                S.DROPPED,
                _why("rejected", reviewer, note),
                self._clock.now(),
                expect=_HELD,
            ),
        )
        await self._audit(reviewer, "reject", f"delivery:{delivery_id}", note, 1)
        return changed

    async def approve_campaign(self, name: str, reviewer: str, note: str = "") -> Outcome:
        """Approve a campaign: release what policies held of it; later messages flow."""
        return await self._campaign_step(
            name,
            reviewer,
            note,
            "approve-campaign",
            "campaign approved",
            {"approval": Approval.APPROVED},
            _HELD,
            lambda d: d.hold_origin != "pause",
            S.DELAYED,
        )

    async def reject_campaign(self, name: str, reviewer: str, note: str = "") -> Outcome:
        """Reject a campaign: drop everything of it not yet sent."""
        return await self._campaign_step(
            name,
            reviewer,
            note,
            "reject-campaign",
            "campaign rejected",
            {"approval": Approval.REJECTED},
            _UNSENT,
            lambda d: True,
            S.DROPPED,
        )

    async def pause_campaign(self, name: str, reviewer: str, note: str = "") -> Outcome:
        """The kill switch: hold every unsent delivery of the campaign, and every new one."""
        return await self._campaign_step(
            name,
            reviewer,
            note,
            "pause",
            "campaign paused",
            {"paused": True},
            _WAITING,
            lambda d: True,
            S.HELD,
        )

    async def resume_campaign(self, name: str, reviewer: str, note: str = "") -> Outcome:
        """Lift the kill switch: what the pause held is judged again now."""
        return await self._campaign_step(
            name,
            reviewer,
            note,
            "resume",
            "campaign resumed",
            {"paused": False},
            _HELD,
            lambda d: d.hold_origin == "pause",
            S.DELAYED,
        )

    async def _campaign_step(
        self,
        name: str,
        reviewer: str,
        note: str,
        action: str,
        what: str,
        update: dict[str, Any],
        states: frozenset[DeliveryState],
        select: Callable[[Delivery], bool],
        to: DeliveryState,
    ) -> Outcome:
        """Record the campaign's new state, move its matching deliveries, audit it."""
        campaign = await self._set(name, reviewer, **update)
        now = self._clock.now()
        released = to is S.DELAYED  # due now: every policy judges it again at once
        change = Change(
            to,
            _why(what, reviewer, note),
            now,
            expect=states,
            due_at=now if released else None,
            hold_origin="pause" if to is S.HELD else None,
        )
        count = await self._each(name, states, select, change)
        await self._audit(reviewer, action, f"campaign:{name}", note, count)
        if released:
            self._on_release()
        return Outcome(campaign, count)

    async def _set(
        self,
        name: str,
        reviewer: str,
        *,
        approval: Approval | None = None,
        paused: bool | None = None,
    ) -> Campaign:
        current = await self._store.get_campaign(name) or Campaign(name)
        updated = Campaign(
            name,
            approval if approval is not None else current.approval,
            paused if paused is not None else current.paused,
            self._clock.now(),
            reviewer,
        )
        await self._store.set_campaign(updated)
        return updated

    async def _each(
        self,
        campaign: str,
        states: frozenset[DeliveryState],
        select: Callable[[Delivery], bool],
        change: Change,
    ) -> int:
        count = 0
        for state in sorted(states):
            after: str | None = None
            while True:
                page = await self._store.list_deliveries(
                    DeliveryQuery(state=state, campaign=campaign, after=after, limit=_PAGE)
                )
                for delivery in page.deliveries:
                    if not select(delivery):
                        continue
                    try:
                        await self._store.change(delivery.id, change)
                    except Conflict:
                        continue  # it moved on meanwhile (sent, claimed): nothing to do
                    count += 1
                if page.next is None:
                    break
                after = page.next
        return count

    async def _audit(self, actor: str, action: str, target: str, note: str, count: int) -> None:
        await self._store.add_audit(
            AuditEntry(self._clock.now(), actor, action, target, note, count)
        )


def _why(what: str, reviewer: str, note: str) -> str:
    return f"{what} by {reviewer}" + (f": {note}" if note else "")
