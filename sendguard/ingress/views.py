"""How sendguard's objects look in JSON answers (field names are part of the contract)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sendguard.approvals import Approval, CampaignSummary
from sendguard.audit import AuditEntry
from sendguard.deliveries import RecordedOutcome
from sendguard.events import Event
from sendguard.fields import show_fields
from sendguard.message import Delivery, DeliveryState, Message, Transition
from sendguard.verdict import NO_POLICY, Decision


def when(at: datetime | None) -> str | None:
    """RFC 3339 in UTC, or None."""
    return None if at is None else at.isoformat().replace("+00:00", "Z")


def decision_reasons(decision: Decision) -> list[dict[str, Any]]:
    """Every policy's verdict and reason, as answered to a send.

    The verdict and mode are their `StrEnum` members, which every JSON writer writes as
    their values (each `.value` is a property call: a fifth of a send's answer)."""
    return [
        {
            "policy": o.policy,
            "verdict": o.verdict.action,
            "mode": o.mode,
            "reason": o.verdict.reason,
            "until": None if o.verdict.until is None else when(o.verdict.until),
            "error": o.error,
        }
        for o in decision.outcomes
    ]


def recorded_reasons(outcomes: Sequence[RecordedOutcome]) -> list[dict[str, Any]]:
    """Every recorded policy verdict of a delivery, oldest first."""
    return [
        {
            "at": when(r.at),
            "policy": r.outcome.policy,
            "verdict": r.outcome.verdict.action.value,
            "mode": r.outcome.mode.value,
            "reason": r.outcome.verdict.reason,
            "until": when(r.outcome.verdict.until),
            "error": r.outcome.error,
        }
        for r in outcomes
    ]


def message_view(message: Message) -> dict[str, Any]:
    """A message without its content."""
    fields = message.fields
    return {
        "id": message.id,
        "received_at": when(message.received_at),
        "ingress": message.ingress,
        "from": message.mail_from,
        "recipients": list(message.recipients),
        "subject": message.subject,
        **show_fields(fields),
        "size": message.size,
    }


def delivery_view(
    delivery: Delivery,
    transitions: Sequence[Transition],
    outcomes: Sequence[RecordedOutcome],
) -> dict[str, Any]:
    """A delivery with its history and every policy's verdict."""
    return {
        "id": delivery.id,
        "message_id": delivery.message.id,
        "recipient": delivery.recipient,
        "state": delivery.state.value,
        "campaign": delivery.campaign,
        "subject": delivery.message.subject,
        "created_at": when(delivery.created_at),
        "updated_at": when(delivery.updated_at),
        "due_at": when(delivery.due_at),
        "attempts": delivery.attempts,
        "last_error": delivery.last_error,
        "approved_by": delivery.approved_by,
        "reason": _why(delivery, transitions),
        "transitions": [
            {"at": when(t.at), "state": t.state.value, "reason": t.reason} for t in transitions
        ],
        "reasons": recorded_reasons(outcomes),
    }


def _why(delivery: Delivery, transitions: Sequence[Transition]) -> str:
    """The latest step's reason; for a delivery that went (or is going) out, also why the
    policies let it go, which the `queued` step recorded ("upstream accepted" alone does not
    answer "why did Ann get this?")."""
    if not transitions:
        return ""
    latest = transitions[-1].reason
    if delivery.state in (DeliveryState.SENDING, DeliveryState.SENT):
        queued = [t for t in transitions if t.state is DeliveryState.QUEUED]
        if queued and queued[-1] is not transitions[-1]:
            if queued[-1].reason == NO_POLICY:  # "let through by no policy ..." reads wrong
                return f"{latest}; {NO_POLICY}"
            return f"{latest}; let through by {queued[-1].reason}"
    return latest


def campaign_view(summary: CampaignSummary) -> dict[str, Any]:
    """A campaign's review state and delivery counts."""
    campaign = summary.campaign
    # A rejection is final (everything unsent was dropped): a pause must not mask it.
    if campaign.approval is Approval.REJECTED:
        state = campaign.approval.value
    elif campaign.paused:
        state = "paused"
    elif campaign.approval is not None:
        state = campaign.approval.value
    else:
        state = "pending"
    return {
        "name": campaign.name,
        "state": state,
        "approval": campaign.approval.value if campaign.approval else None,
        "paused": campaign.paused,
        "updated_at": when(campaign.updated_at),
        "updated_by": campaign.updated_by,
        "counts": {s.value: n for s, n in summary.counts.items()},
    }


def audit_view(entry: AuditEntry) -> dict[str, Any]:
    """One audit entry."""
    return {
        "id": entry.id,
        "at": when(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "note": entry.note,
        "count": entry.count,
    }


def event_view(event: Event) -> dict[str, Any]:
    """One engagement or suppression event."""
    return {
        "type": str(event.type),
        "recipient": event.recipient,
        "at": when(event.at),
        "message_id": event.message_id,
    }
