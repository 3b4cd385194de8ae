"""Review: what people do with held deliveries and campaigns, each action audited.

Approving a delivery lifts the human hold, and a context hold as an explicit override ("I
checked: send", kept as `override_by`): the released delivery becomes due now in `delayed`, so
the dispatcher judges it again with every other policy before it leaves (an address that
unsubscribed, or a cap that filled, while it waited still counts). Pausing a campaign is the
kill switch: its unsent deliveries are held (origin `pause`) until it is resumed; the global
pause does the same for every delivery.

Approving a campaign records the content fingerprints of the held deliveries it released: the
human hold lets later mail with that content flow, and holds changed copy again. By default
the released deliveries are judged again by every policy (a pattern or a sensitive recipient
still holds); `release_all` lifts every hold reason of the human hold for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sendguard.approvals import Approval, Campaign, ContentApproval, GlobalPause
from sendguard.audit import AuditEntry
from sendguard.clock import Clock
from sendguard.content import fingerprints
from sendguard.deliveries import Change, DeliveryQuery
from sendguard.errors import Conflict
from sendguard.message import Delivery, DeliveryState, HoldOrigin
from sendguard.offload import in_process
from sendguard.store.base import Store

S = DeliveryState
_HELD = frozenset({S.HELD})
_UNSENT = frozenset({S.QUEUED, S.DELAYED, S.DEFERRED, S.HELD})
_WAITING = frozenset({S.QUEUED, S.DELAYED, S.DEFERRED})
_PAGE = 500


def _every(delivery: Delivery) -> bool:
    return True


def _held_by_policy(delivery: Delivery) -> bool:
    return delivery.hold_origin is not HoldOrigin.PAUSE


def _held_by_pause(delivery: Delivery) -> bool:
    return delivery.hold_origin is HoldOrigin.PAUSE


@dataclass(frozen=True)
class CampaignAction:
    """One campaign-wide review action: what it records on the campaign, and which of its
    deliveries it moves to which state."""

    verb: str
    """How the API and the review page name it (`POST /v1/campaigns/{name}/<verb>`)."""
    done: str
    """The verb in the past tense, for people."""
    audit: str
    """The action as the audit log records it."""
    what: str
    """The reason recorded with each delivery it moves."""
    states: frozenset[DeliveryState]
    select: Callable[[Delivery], bool]
    to: DeliveryState
    approval: Approval | None = None
    """The campaign's new approval, if the action changes it."""
    paused: bool | None = None
    """The campaign's new pause state, if the action changes it."""
    records_content: bool = False
    """Record the content fingerprints of its held deliveries as approved."""


APPROVE = CampaignAction(
    "approve",
    "approved",
    "approve-campaign",
    "campaign approved",
    _HELD,
    _held_by_policy,
    S.DELAYED,
    approval=Approval.APPROVED,
    records_content=True,
)
REJECT = CampaignAction(
    "reject",
    "rejected",
    "reject-campaign",
    "campaign rejected",
    _UNSENT,
    _every,
    S.DROPPED,
    approval=Approval.REJECTED,
)
PAUSE = CampaignAction(
    "pause", "paused", "pause", "campaign paused", _WAITING, _every, S.HELD, paused=True
)
RESUME = CampaignAction(
    "resume",
    "resumed",
    "resume",
    "campaign resumed",
    _HELD,
    _held_by_pause,
    S.DELAYED,
    paused=False,
)
CAMPAIGN_ACTIONS: dict[str, CampaignAction] = {a.verb: a for a in (APPROVE, REJECT, PAUSE, RESUME)}
"""Every campaign action by its verb."""


class NotFound(Conflict):
    """The delivery or campaign does not exist."""


@dataclass(frozen=True)
class Outcome:
    """What a campaign-wide action did."""

    campaign: Campaign
    count: int


@dataclass(frozen=True)
class PauseOutcome:
    """What pausing or resuming all sending did."""

    pause: GlobalPause
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
        policy (for which the approval is an override: "I checked: send") judges it again now.

        In an approved campaign, the delivery's content (text and links) is recorded as
        approved too: a reviewer who let changed copy go has approved that copy, and later
        mail with it flows."""
        held = await self._held(delivery_id)
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
        await self._record_content(held, reviewer, now)
        await self._audit(reviewer, "approve", f"delivery:{delivery_id}", note, 1)
        self._on_release()
        return changed

    async def _record_content(self, delivery: Delivery, reviewer: str, now: datetime) -> None:
        """Record the content of an approved delivery of an approved campaign as approved."""
        name = delivery.campaign
        if (
            name is None
            or delivery.message.content_hash is None
            or delivery.hold_origin is HoldOrigin.PAUSE
        ):
            return
        campaign = await self._store.get_campaign(name)
        if campaign is None or campaign.approval is not Approval.APPROVED:
            return  # approving the campaign later records what it holds then
        text, links = await self._fingerprints(delivery)
        await self._store.add_approvals([ContentApproval(name, text, reviewer, now, links)])

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

    async def approve_campaign(
        self, name: str, reviewer: str, note: str = "", *, release_all: bool = False
    ) -> Outcome:
        """Approve a campaign and the content it held: release what policies held of it;
        later messages with that content flow.

        With `release_all` the released deliveries count as approved one by one, so no hold
        reason of the human hold (a pattern, a sensitive recipient) holds them again.
        """
        return await self.on_campaign(APPROVE, name, reviewer, note, release_all=release_all)

    async def reject_campaign(self, name: str, reviewer: str, note: str = "") -> Outcome:
        """Reject a campaign: drop everything of it not yet sent."""
        return await self.on_campaign(REJECT, name, reviewer, note)

    async def pause_campaign(self, name: str, reviewer: str, note: str = "") -> Outcome:
        """The kill switch: hold every unsent delivery of the campaign, and every new one."""
        return await self.on_campaign(PAUSE, name, reviewer, note)

    async def resume_campaign(self, name: str, reviewer: str, note: str = "") -> Outcome:
        """Lift the kill switch: what the pause held is judged again now."""
        return await self.on_campaign(RESUME, name, reviewer, note)

    async def on_campaign(
        self,
        action: CampaignAction,
        name: str,
        reviewer: str,
        note: str = "",
        *,
        release_all: bool = False,
    ) -> Outcome:
        """Do `action` to campaign `name`: record its new state, move its matching
        deliveries, audit it. `release_all` applies to an approval only."""
        release_all = release_all and action is APPROVE
        now = self._clock.now()
        if action.records_content:
            held: list[Delivery] = []
            await self._each(name, _HELD, lambda d: _note_content(d, held), None)
            seen = {await self._fingerprints(d) for d in held}
            await self._store.add_approvals(
                [ContentApproval(name, text, reviewer, now, links) for text, links in sorted(seen)]
            )
        current = await self._store.get_campaign(name) or Campaign(name)
        campaign = Campaign(
            name,
            action.approval if action.approval is not None else current.approval,
            action.paused if action.paused is not None else current.paused,
            now,
            reviewer,
        )
        await self._store.set_campaign(campaign)
        released = action.to is S.DELAYED  # due now: every policy judges it again at once
        what = action.what + (", every hold reason released" if release_all else "")
        change = Change(
            action.to,
            _why(what, reviewer, note),
            now,
            expect=action.states,
            due_at=now if released else None,
            hold_origin=HoldOrigin.PAUSE if action.to is S.HELD else None,
            approved_by=reviewer if release_all else None,
        )
        count = await self._each(name, action.states, action.select, change)
        audit_note = f"release all; {note}" if release_all and note else note
        await self._audit(reviewer, action.audit, f"campaign:{name}", audit_note, count)
        if released:
            self._on_release()
        return Outcome(campaign, count)

    async def pause_all(self, reviewer: str, note: str = "") -> PauseOutcome:
        """The global kill switch: hold every unsent delivery, and every new one."""
        return await self._global_step(True, reviewer, note)

    async def resume_all(self, reviewer: str, note: str = "") -> PauseOutcome:
        """Lift the global kill switch: what a pause held is judged again now (a campaign
        that is still paused holds its own deliveries again)."""
        return await self._global_step(False, reviewer, note)

    async def pause_state(self) -> GlobalPause:
        """Whether sending is paused, since when and by whom."""
        return await self._store.get_pause()

    async def _global_step(self, paused: bool, reviewer: str, note: str) -> PauseOutcome:
        now = self._clock.now()
        pause = GlobalPause(paused, now, reviewer, note)
        await self._store.set_pause(pause)
        what = "sending paused" if paused else "sending resumed"
        change = Change(
            S.HELD if paused else S.DELAYED,
            _why(what, reviewer, note),
            now,
            expect=_WAITING if paused else _HELD,
            due_at=None if paused else now,
            hold_origin=HoldOrigin.PAUSE if paused else None,
        )
        states = _WAITING if paused else _HELD
        select: Callable[[Delivery], bool] = _every if paused else _held_by_pause
        count = await self._each(None, states, select, change)
        await self._audit(reviewer, "pause" if paused else "resume", "all", note, count)
        if not paused:
            self._on_release()
        return PauseOutcome(pause, count)

    async def _each(
        self,
        campaign: str | None,
        states: frozenset[DeliveryState],
        select: Callable[[Delivery], bool],
        change: Change | None,
    ) -> int:
        """Apply `change` to the selected deliveries in `states` (of `campaign`, or of every
        campaign and none); without a change, only visit them. Return how many changed."""
        count = 0
        for state in sorted(states):
            after: str | None = None
            while True:
                page = await self._store.list_deliveries(
                    DeliveryQuery(state=state, campaign=campaign, after=after, limit=_PAGE)
                )
                for delivery in page.deliveries:
                    if not select(delivery) or change is None:
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

    async def _fingerprints(self, delivery: Delivery) -> tuple[str, str]:
        """The (text, links) fingerprints an approval of `delivery` records; links read from
        the content of a message stored before they were recorded (schema 14)."""
        message = delivery.message
        assert message.content_hash is not None
        if message.links is not None:
            return message.content_hash, message.links
        content = await self._store.message_content(message.id)
        return message.content_hash, (await in_process(len(content), fingerprints, content)).links

    async def _audit(self, actor: str, action: str, target: str, note: str, count: int) -> None:
        await self._store.add_audit(
            AuditEntry(self._clock.now(), actor, action, target, note, count)
        )


def _note_content(delivery: Delivery, held: list[Delivery]) -> bool:
    """Collect the deliveries whose content a campaign approval covers: what its policy holds
    showed."""
    if delivery.hold_origin is not HoldOrigin.PAUSE and delivery.message.content_hash is not None:
        held.append(delivery)
    return False


def _why(what: str, reviewer: str, note: str) -> str:
    return f"{what} by {reviewer}" + (f": {note}" if note else "")
