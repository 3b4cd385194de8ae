"""The outbound webhooks' outbox (`WebhookOutbox`): the rows announcing a delivery's
lifecycle event, claimed and retried by the webhook sender.

`_emit` writes those rows inside the transaction of the write that causes the event (a new
delivery, a state change, a reported bounce), so an event is announced exactly when its change
commits: those transactions span their own concern and this one, on purpose (a transactional
outbox). The claims, done and retry marks are transactions of their own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sendguard.clock import from_micros, to_micros
from sendguard.lifecycle import LifecycleEvent, OutboundEvent, WebhookTarget
from sendguard.store.sql_jobs import SqlJobs, Tx, _marks, _one


class SqlOutbox(SqlJobs):
    """Outbound webhook events: written with each change, claimed by the sender."""

    #: outbound webhooks that want state changes (set from the config)
    _webhook_targets: tuple[WebhookTarget, ...] = ()

    def set_webhook_targets(self, targets: Sequence[WebhookTarget]) -> None:
        self._webhook_targets = tuple(targets)

    async def _emit(
        self,
        tx: Tx,
        delivery_id: str,
        event: LifecycleEvent | None,
        reason: str,
        at: int,
        known: tuple[str, str, str | None] | None = None,
    ) -> None:
        """Write the outbox rows announcing `event` for a delivery, in the change's transaction.

        `known` is (message id, recipient, campaign) when the caller has them at hand.
        """
        targets = [t.name for t in self._webhook_targets if event in t.events]
        if event is None or not targets:
            return
        if known is None:
            row = await _one(
                tx,
                "SELECT message_id, recipient, campaign FROM deliveries WHERE id = ?",
                (delivery_id,),
            )
            if row is None:
                return
            known = (row[0], row[1], row[2])
        message_id, recipient, campaign = known
        payload = json.dumps(
            {
                "type": event.value,
                "at": from_micros(at).isoformat().replace("+00:00", "Z"),
                "delivery": {
                    "id": delivery_id,
                    "message_id": message_id,
                    "recipient": recipient,
                    "campaign": campaign,
                    "reason": reason,
                },
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for target in targets:
            await tx.execute(
                "INSERT INTO webhook_outbox (target, delivery_id, event, payload, created_at,"
                " next_at) VALUES (?, ?, ?, ?, ?, ?)",
                (target, delivery_id, event.value, payload, at, at),
            )

    async def claim_webhook_events(
        self, now: datetime, owner: str, limit: int, lease: timedelta
    ) -> Sequence[OutboundEvent]:
        at, until = to_micros(now), to_micros(now + lease)
        columns = "id, target, delivery_id, event, payload, created_at, attempts"

        async def job(tx: Tx) -> list[Sequence[Any]]:
            taken = await tx.fetch(
                *self._lease(
                    "webhook_outbox",
                    "SELECT o.id FROM webhook_outbox o WHERE o.next_at <= ?"
                    " AND (o.lease_until IS NULL OR o.lease_until < ?)"
                    " AND NOT EXISTS (SELECT 1 FROM webhook_outbox p WHERE p.target = o.target"
                    " AND p.delivery_id = o.delivery_id AND p.id < o.id) ORDER BY o.id",
                    (at, at),
                    limit,
                    owner,
                    until,
                )
            )
            ids = [r[0] for r in taken]
            if not ids:
                return []
            return await tx.fetch(
                f"SELECT {columns} FROM webhook_outbox WHERE id IN ({_marks(len(ids))})"
                " ORDER BY id",
                ids,
            )

        return [
            OutboundEvent(
                int(r[0]), r[1], r[2], LifecycleEvent(r[3]), r[4], from_micros(r[5]), int(r[6])
            )
            for r in await self._write(job)
        ]

    async def webhook_event_done(self, event_id: int) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute("DELETE FROM webhook_outbox WHERE id = ?", (event_id,))

        await self._write(job)

    async def webhook_event_retry(self, event_id: int, next_at: datetime, error: str) -> None:
        async def job(tx: Tx) -> None:
            await tx.execute(
                "UPDATE webhook_outbox SET attempts = attempts + 1, next_at = ?,"
                " last_error = ?, owner = NULL, lease_until = NULL WHERE id = ?",
                (to_micros(next_at), error[:500], event_id),
            )

        await self._write(job)

    async def pending_webhook_events(self) -> int:
        async def job(tx: Tx) -> Sequence[Any] | None:
            return await _one(tx, "SELECT COUNT(*) FROM webhook_outbox")

        row = await self._scan(job)
        return int(row[0]) if row else 0
