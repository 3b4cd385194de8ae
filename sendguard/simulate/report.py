"""The difference between what was decided then and what the candidate config would decide."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sendguard.simulate.replay import Replayed
from sendguard.verdict import Action

_PAST = {
    Action.FORWARD: "forwarded",
    Action.DELAY: "delayed",
    Action.HOLD: "held",
    Action.DROP: "dropped",
}
_WOULD = {
    Action.FORWARD: "be forwarded",
    Action.DELAY: "be delayed",
    Action.HOLD: "be held for review",
    Action.DROP: "be dropped",
}


def describe(row: Replayed) -> str:
    """One changed delivery for people: who, what, when, then and now, and why."""
    would = _WOULD[row.would]
    if row.until is not None:
        would += f" to {row.until:%m-%d}"
    subject = row.subject or "(no subject)"
    because = f" by {row.reason}" if row.would is not Action.FORWARD else ""
    return (
        f"{row.recipient}: *{subject}* {row.at:%Y-%m-%d} — {_PAST[row.then]} then, "
        f"would {would}{because}"
    )


@dataclass(frozen=True)
class Report:
    """What a replay found; `changed` are the deliveries decided differently."""

    since: datetime | None
    until: datetime | None
    replayed: tuple[Replayed, ...]
    changed: tuple[Replayed, ...]
    examples: int = 5
    top: int = 10

    @classmethod
    def of(
        cls,
        rows: list[Replayed],
        since: datetime | None,
        until: datetime | None,
        *,
        examples: int = 5,
        top: int = 10,
    ) -> Report:
        """Compare every replayed delivery's verdict then with the candidate's."""
        changed = tuple(r for r in rows if r.would is not r.then)
        return cls(since, until, tuple(rows), changed, examples, top)

    def policies(self) -> list[dict[str, Any]]:
        """Per policy and verdict: how many deliveries it would decide differently, examples."""
        groups: dict[tuple[str, Action], list[Replayed]] = {}
        for row in self.changed:
            groups.setdefault((row.policy or "(none)", row.would), []).append(row)
        return [
            {
                "policy": policy,
                "verdict": action.value,
                "count": len(group),
                "examples": [self.delivery(r) for r in group[: self.examples]],
            }
            for (policy, action), group in sorted(groups.items(), key=lambda g: -len(g[1]))
        ]

    def lost_engagement(self) -> list[Replayed]:
        """Mail that would have been dropped which the recipient later opened or clicked."""
        return [r for r in self.changed if r.would is Action.DROP and r.engaged]

    def most(self, attribute: str) -> list[dict[str, Any]]:
        counts = Counter(getattr(r, attribute) for r in self.changed if getattr(r, attribute))
        return [{attribute: k, "count": n} for k, n in counts.most_common(self.top)]

    @staticmethod
    def delivery(row: Replayed) -> dict[str, Any]:
        """One delivery as JSON."""
        return {
            "recipient": row.recipient,
            "subject": row.subject,
            "campaign": row.campaign,
            "at": row.at.isoformat(),
            "then": row.then.value,
            "would": row.would.value,
            "until": row.until.isoformat() if row.until else None,
            "policy": row.policy,
            "reason": row.reason,
            "final": row.final.value,
            "engaged": row.engaged,
            "summary": describe(row),
        }

    def to_json(self) -> dict[str, Any]:
        """The whole report, as `--json` prints it."""
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "deliveries": len(self.replayed),
            "changed": len(self.changed),
            "policies": self.policies(),
            "changes": [self.delivery(r) for r in self.changed],
            "recipients": self.most("recipient"),
            "campaigns": self.most("campaign"),
            "dropped_but_engaged": [self.delivery(r) for r in self.lost_engagement()],
        }
