"""The dispatcher: claims due deliveries and sends them, with retries and backoff.

One claimer task takes due deliveries from the store (with a lease, so no two workers or
instances take the same one) and hands them to `workers` worker tasks. A delivery to be sent
at once needs no claim when the queue has room and nothing due in the store waits before it:
the intake commits it already leased to this dispatcher and `sending` (`reserve`, then
`hand_over` after the commit). A worker

1. re-runs the policies for a delivery that was delayed (the world may have changed while it
   waited) and stops there unless the new verdict is forward;
2. marks the delivery `sending` durably before talking to the upstream (the claim does it for
   deliveries that were due to be sent; one judged again first is marked after);
3. sends, then marks it `sent`, `deferred` (4xx or network: exponential backoff with jitter
   between `min_backoff` and `max_backoff`, see `backoff`) or `failed` (5xx, or retrying past
   `max_lifetime`).

A crash between 2 and 3 leaves the delivery `sending`; it is claimed again after recovery, so
delivery is at-least-once and a duplicate is possible only in that window.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import structlog

from sendguard.audit import AuditEntry
from sendguard.clock import Clock, monotonic
from sendguard.config import DeliveryOptions, ReviewOptions
from sendguard.deliveries import Change, IntakeClaim
from sendguard.delivery.routing import RouteKey
from sendguard.delivery.upstream import Envelope, Upstream, passing_through
from sendguard.engine import Engine
from sendguard.errors import Conflict, StoreUnavailable, UpstreamPermanent, UpstreamTransient
from sendguard.esp_request import ESPS, EspRequest
from sendguard.message import Delivery, DeliveryState, HoldExpiry
from sendguard.metrics import Metrics
from sendguard.phrasing import human_duration, human_time
from sendguard.reload import SwitchableUpstream
from sendguard.store.base import Store

log = structlog.get_logger("sendguard.dispatcher")

_SENDABLE = frozenset({DeliveryState.QUEUED, DeliveryState.DEFERRED, DeliveryState.SENDING})
# How long `caught_up` waits at most for the claim in flight (a claim takes one batch).
CAUGHT_UP_WAIT = 0.05


def backoff(attempts: int, minimum: timedelta, maximum: timedelta, draw: float) -> timedelta:
    """The wait before retry number `attempts` (1-based), with "equal jitter".

    The ceiling doubles from `2 * minimum` with each attempt and is capped at `maximum`; the
    wait is drawn uniformly from the upper half below it, `draw` (in [0, 1]) choosing where:
    retry 1 waits between `minimum` and `2 * minimum`, retry 2 between `2 * minimum` and
    `4 * minimum`, ..., and once capped between `maximum / 2` and `maximum`. Never less than
    `minimum`, never more than `maximum`.

    Why jitter: deliveries deferred together (the upstream was down) would otherwise all retry
    at the same instant, again and again. Why the upper half and not "full jitter" (anywhere
    from zero to the ceiling): a wait near zero would hammer an upstream that just refused
    and ignore `min_backoff`; the upper half keeps the floor and still spreads a deferred
    batch over a window as long as the wait itself.
    """
    # In float seconds: a timedelta of `minimum * 2**attempts` overflows after enough retries.
    low, high = minimum.total_seconds(), maximum.total_seconds()
    ceiling = min(high, low * 2.0 ** min(max(1, attempts), 64))
    floor = max(low, ceiling / 2)
    return timedelta(seconds=floor + (ceiling - floor) * min(1.0, max(0.0, draw)))


class Dispatcher:
    """Claims due deliveries and sends each through the upstream its route chooses."""

    def __init__(
        self,
        store: Store,
        engine: Engine,
        upstream: SwitchableUpstream | Upstream,
        clock: Clock,
        config: DeliveryOptions,
        metrics: Metrics,
        owner: str,
        review: ReviewOptions | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._engine = engine
        self._upstream = (
            upstream if isinstance(upstream, SwitchableUpstream) else SwitchableUpstream(upstream)
        )
        self._clock = clock
        self._config = config
        self._metrics = metrics
        self._owner = owner
        self._review = review or ReviewOptions()
        # Backoff jitter only; a test passes a seeded one.
        self._random = rng or random.Random()  # noqa: S311 - spreading retries, not secrecy
        self._wake = asyncio.Event()
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=config.workers * 2)
        self._stopping = asyncio.Event()
        self._busy = 0
        # Places in the queue promised to deliveries the intake is committing claimed.
        self._reserved = 0
        # Set when the queue has room for a claim again (half of it free), or on stop.
        self._freed = asyncio.Event()
        # Whether deliveries may be due in the store that no claim has taken yet: at start
        # (a dead process's), after `wake` (changed elsewhere), after a poll (come due
        # meanwhile, or a sibling's), while the queue is full. The intake claims nothing while
        # they may be, so new mail queues behind them in due order instead of going first for
        # as long as it keeps coming. Cleared by a claim that took less than it had room for.
        # Not set by `queued`: see there.
        self._behind = True
        self._wakes = 0
        # The claim in flight while it may still clear `_behind` (no wake-up since it began):
        # done when it returns, or at the first wake-up meanwhile. See `caught_up`.
        self._claim_clears: asyncio.Future[None] | None = None
        self._catching_up = False  # an intake waits in `caught_up`

    def reconfigure(self, config: DeliveryOptions, review: ReviewOptions) -> None:
        """Use these retry, lifetime and review settings from now on (a config reload).

        `workers` is fixed for the process's life (the claim queue is sized by it); a reload
        that changes it says a restart is needed.
        """
        self._config = config.model_copy(update={"workers": self._config.workers})
        self._review = review

    def wake(self) -> None:
        """New work may be due: look now rather than at the next poll."""
        self._behind = True
        self._wakes += 1
        self._wake.set()
        self._claim_settled()  # the claim in flight no longer clears `_behind`

    def queued(self) -> None:
        """The intake committed deliveries unclaimed: look for them now.

        Unlike `wake`, this neither sets `_behind` nor stops the claim in flight from clearing
        it. Those deliveries are new mail, not a backlog that must go first: the next claim
        takes them (this sets `_wake`, so it starts at once, after their commit), and a
        claimer without room for it sets `_behind` (`_sleep_until_due`), so new mail claimed
        at intake cannot keep them waiting. Counting them as a wake made a busy instance
        stay behind for good: every message committed unclaimed while a claim was in flight
        kept that claim from clearing `_behind`, so the next was committed unclaimed too
        (two instances under `bench/pg_cpu.py`: 27 % of deliveries paid a claim, now 2 %).
        """
        self._wake.set()

    async def caught_up(self) -> None:
        """Before `reserve`: wait for the claim in flight if it may find the store caught up.

        Without this, a lone sender's messages alternate with the claim of the one before:
        the claim of a message committed unclaimed is still in flight when the next one
        asks for room, so that one is committed unclaimed too, and so on (seen at idle for
        63 % of messages: each then pays a claim of its own). Its write would queue behind
        the claim's batch anyway. Bounded: with PostgreSQL the caller holds a pooled
        connection (the recipient's lock), which a claim waiting for one may need.
        """
        claim = self._claim_clears
        if claim is None or not self._behind or self._catching_up:
            return
        # One intake at a time: when others commit meanwhile (a burst, many clients), they
        # join the claim's batch unclaimed, as before: all of them waiting for the claim
        # would miss that batch and make the next one (seen: HTTP req/s down a quarter).
        self._catching_up = True
        try:
            await asyncio.wait({claim}, timeout=CAUGHT_UP_WAIT)
        finally:
            self._catching_up = False

    def _claim_settled(self) -> None:
        if self._claim_clears is not None:
            if not self._claim_clears.done():
                self._claim_clears.set_result(None)
            self._claim_clears = None

    def reserve(self, count: int) -> IntakeClaim | None:
        """A claim for `count` deliveries the intake is about to commit to be sent at once,
        if the queue has room for them (else None: they are committed unclaimed, and claimed
        as due, after what is due before them). The room is kept for them until `hand_over`
        or `cancel`."""
        if self._behind or self._stopping.is_set() or self._room() < count:
            return None
        self._reserved += count
        return IntakeClaim(self._owner, self._clock.now() + self._config.lease)

    def hand_over(self, deliveries: Sequence[Delivery]) -> None:
        """Send these deliveries, committed under a claim from `reserve`."""
        self._reserved -= len(deliveries)
        for delivery in deliveries:
            self._queue.put_nowait(delivery)

    def cancel(self, count: int) -> None:
        """Give back the room of a claim from `reserve` whose commit failed."""
        self._reserved -= count
        self._note_room()

    def _note_room(self) -> None:
        """Let a claim loop waiting for room go on once half the queue is free."""
        if self._room() >= self._queue.maxsize // 2:
            self._freed.set()

    def _room(self) -> int:
        return self._queue.maxsize - self._queue.qsize() - self._reserved

    async def run(self) -> None:
        """Claim and send until `stop` is called."""
        workers = [
            asyncio.create_task(self._worker(), name=f"delivery-worker-{i}")
            for i in range(self._config.workers)
        ]
        try:
            await self._claim_loop()
        finally:
            await self._drain(workers)

    async def stop(self) -> None:
        """Stop claiming; `run` returns after in-flight sends finish (or the drain timeout)."""
        self._stopping.set()
        self._wake.set()
        self._freed.set()
        self._claim_settled()

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            room = self._room()
            claimed: list[Delivery] = []
            failed = False
            wakes = self._wakes
            if room > 0:
                self._reserved += room  # kept from the intake's claims while this one runs
                # Whatever a wake-up so far announced was committed before it: this claim sees it.
                self._wake.clear()
                self._claim_clears = asyncio.get_running_loop().create_future()
                try:
                    claimed = list(
                        await self._store.claim_due(
                            self._clock.now(),
                            self._owner,
                            room,
                            self._config.lease,
                            send_within=self._config.max_lifetime,
                        )
                    )
                except StoreUnavailable as exc:
                    failed = True
                    log.warning("claiming failed; retrying", error=str(exc))
                except Exception:  # the claimer must keep running whatever happens
                    failed = True
                    log.exception("claiming failed unexpectedly; retrying")
                finally:
                    self._reserved -= room
            for delivery in claimed:
                self._queue.put_nowait(delivery)  # within the room kept for them
            if room > 0 and not failed and len(claimed) < room and wakes == self._wakes:
                self._behind = False  # everything due was taken, and nothing new since
            self._claim_settled()
            if claimed and len(claimed) == room:
                await asyncio.sleep(0)  # more may be due: come straight back
                continue
            await self._sleep_until_due(retry=failed)

    async def _sleep_until_due(self, *, retry: bool = False) -> None:
        if not retry and self._room() <= 0:
            # Nothing could be claimed: wait for the workers to take half the queue rather
            # than look at what is due. The intake claims nothing meanwhile: what is due
            # (deliveries committed unclaimed for want of room among them) goes first.
            self._behind = True
            self._freed.clear()
            await self._freed.wait()
            return
        timeout = self._config.poll_interval.total_seconds()
        try:
            # After a failed claim, work that is already due would make this loop spin (a
            # store that refuses at once, such as one whose writer stopped): wait a poll.
            # Woken meanwhile: look at once, without reading when the next is due.
            woken = self._wake.is_set()
            due = None if retry or woken else await self._store.next_due_at()
        except Exception:  # noqa: BLE001 - sleeping the poll interval is the safe fallback
            due = None
        if due is not None:
            timeout = min(timeout, max(0.0, (due - self._clock.now()).total_seconds()))
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            self._behind = True  # due, or a poll: look before the intake claims again
        # (A `wake` set `_behind` itself; a claim that began after it may clear it.)

    async def _drain(self, workers: list[asyncio.Task[None]]) -> None:
        deadline = monotonic() + self._config.drain_timeout.total_seconds()
        while self._reserved and monotonic() < deadline:  # commits claimed at intake
            await asyncio.sleep(0.01)
        # Deliveries claimed but not started go back to the store for the next start.
        unstarted = []
        while not self._queue.empty():
            unstarted.append(self._queue.get_nowait().id)
            self._queue.task_done()
        with contextlib.suppress(StoreUnavailable):
            await self._store.release(unstarted, self._owner)
        while self._busy and monotonic() < deadline:
            await asyncio.sleep(0.02)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            delivery = await self._queue.get()
            self._busy += 1
            self._note_room()
            # Bound around the except clauses too: a failure's log line names its delivery.
            bound = structlog.contextvars.bind_contextvars(
                message_id=delivery.message.id, delivery_id=delivery.id
            )
            try:
                await self._process(delivery)
            except Conflict as exc:
                log.info("delivery changed under us; skipped", error=str(exc))
            except StoreUnavailable as exc:
                log.warning("store unavailable; delivery retried after its lease", error=str(exc))
            except Exception:  # a worker must outlive any single delivery's failure
                log.exception("delivery failed unexpectedly; retried after its lease")
            finally:
                structlog.contextvars.reset_contextvars(**bound)
                self._busy -= 1
                self._queue.task_done()

    async def _process(self, delivery: Delivery) -> None:
        if delivery.state is DeliveryState.HELD:
            released = await self._expire_hold(delivery)
            if released is None:
                return
            delivery = released
        if delivery.state is DeliveryState.DELAYED:
            ready = await self._reevaluate(delivery)
            if ready is None:
                return
            delivery = ready
        if delivery.state not in _SENDABLE:
            await self._store.release([delivery.id], self._owner)
            return
        now = self._clock.now()
        first = delivery.first_attempt_at or now
        if now - first > self._config.max_lifetime:
            await self._finish(
                delivery,
                DeliveryState.FAILED,
                f"expired: retried for longer than max_lifetime"
                f" ({human_duration(self._config.max_lifetime)})",
                now,
            )
            return
        if delivery.state is not DeliveryState.SENDING:  # the claim marks what was due to send
            delivery = await self._change_to_sending(delivery, now)
        content = await self._store.message_content(delivery.message.id)
        request = None
        if delivery.message.ingress in ESPS:
            request = await self._store.esp_request(delivery.message.id)
        async with self._upstream.chosen(RouteKey.of(delivery.message)) as chosen:
            await self._send(delivery, content, chosen.upstream, chosen.label, request)

    async def _change_to_sending(self, delivery: Delivery, now: datetime) -> Delivery:
        return await self._store.change(
            delivery.id,
            Change(
                DeliveryState.SENDING,
                f"attempt {delivery.attempts + 1}",
                now,
                expect=_SENDABLE,
                owner=self._owner,
                attempt=True,
            ),
        )

    async def _send(
        self,
        delivery: Delivery,
        content: bytes,
        upstream: Upstream,
        label: str,
        request: EspRequest | None = None,
    ) -> None:
        started = monotonic()
        envelope = Envelope(
            delivery.message.mail_from,
            delivery.recipient,
            delivery.id,
            smtputf8=delivery.message.smtputf8,
            body_8bit=delivery.message.body_8bit,
        )
        # Pass-through: a message that came in through an ESP's endpoint leaves as its
        # client's request when its upstream is that ESP; otherwise it leaves rendered.
        passing = None if request is None else passing_through(upstream, request.esp)
        try:
            if request is not None and passing is not None:
                await passing.send_request(envelope, request)
            elif request is not None and request.template is not None:
                # Accepted while a route led to that ESP; a reload has since changed it.
                raise UpstreamPermanent(
                    f"the message names {request.esp} template {request.template!r}, which only"
                    f" a {request.esp} upstream can send; its route now chooses {label!r}"
                )
            else:
                await upstream.send(envelope, content)
        except UpstreamTransient as exc:
            self._upstream_error(label, "transient", started)
            reason, after = str(exc), exc.retry_after
            await self._record(started, lambda: self._retry_later(delivery, reason, at_least=after))
        except UpstreamPermanent as exc:
            self._upstream_error(label, "permanent", started)
            error = str(exc)
            # Only a reply is the upstream refusing; without a code sendguard gave up.
            refused = f"upstream refused: {exc}" if exc.code is not None else error
            await self._record(
                started,
                lambda: self._finish(
                    delivery, DeliveryState.FAILED, refused, self._clock.now(), error=error
                ),
            )
        except Exception as exc:
            # A bug in an upstream (or a case it does not map) must not leave the delivery
            # `sending` with no reason until its lease ends: retry with backoff, recorded.
            log.exception("upstream raised unexpectedly; deferred", upstream=label)
            self._upstream_error(label, "unexpected", started)
            reason = f"unexpected {type(exc).__name__}: {exc}"
            await self._record(started, lambda: self._retry_later(delivery, reason))
        else:
            timer = self._metrics.kept(self._metrics.upstream_duration, label)
            timer.observe(monotonic() - started)
            accepted = (
                f"upstream accepted ({label}: the {request.esp} request passed through)"
                if passing is not None and request is not None
                else "upstream accepted"
            )
            await self._record(
                started,
                lambda: self._finish(delivery, DeliveryState.SENT, accepted, self._clock.now()),
            )

    async def _record(self, started: float, outcome: Callable[[], Awaitable[object]]) -> None:
        """Record what the upstream answered, trying again while the store refuses.

        The send has happened. Giving up at the first StoreUnavailable (a full disk, a
        database restarting) would leave the delivery `sending` until its lease ends and then
        send it again; retrying here, well within the lease, records it once the store is back.
        """
        deadline = started + self._config.lease.total_seconds() * 0.8
        pause = 0.05
        while True:
            try:
                await outcome()
            except StoreUnavailable as exc:
                if monotonic() + pause >= deadline:
                    raise
                if pause == 0.05:
                    log.warning("store unavailable; recording the outcome again", error=str(exc))
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
            else:
                return

    def _upstream_error(self, name: str, kind: str, started: float) -> None:
        self._metrics.upstream_duration.labels(upstream=name).observe(monotonic() - started)
        self._metrics.upstream_errors.labels(upstream=name, kind=kind).inc()

    async def _expire_hold(self, delivery: Delivery) -> Delivery | None:
        """Nobody reviewed a held delivery in time: apply `review.on_hold_expiry`."""
        now = self._clock.now()
        waited = (
            f"not reviewed within review.hold_expiry ({human_duration(self._review.hold_expiry)})"
        )
        drop = self._review.on_hold_expiry is HoldExpiry.DROP
        # Nobody decided, so sendguard did: the audit log says so beside the people's decisions.
        await self._store.add_audit(
            AuditEntry(
                now,
                "sendguard",
                "expire",
                f"delivery:{delivery.id}",
                f"{waited}; {'dropped' if drop else 'released'}",
                1,
            )
        )
        if drop:
            await self._finish(delivery, DeliveryState.DROPPED, waited, now)
            return None
        # forward: released as if approved; every policy but the human hold judges it again.
        return await self._store.change(
            delivery.id,
            Change(
                DeliveryState.DELAYED,
                f"{waited}; released",
                now,
                expect=frozenset({DeliveryState.HELD}),
                owner=self._owner,
                due_at=now,
                keep_claim=True,
                approved_by="review.on_hold_expiry",
            ),
        )

    async def _reevaluate(self, delivery: Delivery) -> Delivery | None:
        """Judge a delayed delivery again; return it (still claimed) if it may be sent now."""
        async with self._store.lock_recipients([delivery.recipient], campaign=delivery.campaign):
            decision = await self._engine.decide(delivery)
            now = self._clock.now()
            step = self._engine.plan(decision, now)
            changed = await self._store.change(
                delivery.id,
                Change(
                    step.state,
                    step.reason,
                    now,
                    expect=frozenset({DeliveryState.DELAYED}),
                    owner=self._owner,
                    due_at=step.due_at,
                    decision=decision,
                    keep_claim=step.state is DeliveryState.QUEUED,
                    hold_origin=step.hold_origin,
                ),
            )
        if step.state is DeliveryState.DROPPED:
            self._metrics.deliveries_outcomes.labels(outcome="dropped").inc()
        return changed if changed.state is DeliveryState.QUEUED else None

    async def _retry_later(
        self, delivery: Delivery, error: str, *, at_least: timedelta | None = None
    ) -> None:
        now = self._clock.now()
        wait = backoff(
            delivery.attempts,
            self._config.min_backoff,
            self._config.max_backoff,
            self._random.random(),
        )
        if at_least is not None:  # the upstream's Retry-After wins over a shorter backoff
            wait = max(wait, at_least)
        due = now + wait
        first = delivery.first_attempt_at or now
        if due - first > self._config.max_lifetime:
            await self._finish(
                delivery,
                DeliveryState.FAILED,
                f"giving up after {delivery.attempts} attempts within max_lifetime: {error}",
                now,
                error=error,
            )
            return
        await self._store.finish(
            delivery.id,
            Change(
                DeliveryState.DEFERRED,
                f"upstream: {error}; retry at {human_time(due)}",
                now,
                expect=frozenset({DeliveryState.SENDING}),
                owner=self._owner,
                due_at=due,
                error=error,
            ),
        )
        self._metrics.deliveries_outcomes.labels(outcome="deferred").inc()
        log.info("deferred", recipient=delivery.recipient, retry_at=due.isoformat(), error=error)

    async def _finish(
        self,
        delivery: Delivery,
        state: DeliveryState,
        reason: str,
        now: datetime,
        error: str | None = None,
    ) -> None:
        await self._store.finish(
            delivery.id,
            Change(
                state,
                reason,
                now,
                owner=self._owner,
                error=error,
            ),
        )
        self._metrics.kept(self._metrics.deliveries_outcomes, state.value).inc()
        log.info("finished", state=state.value, recipient=delivery.recipient, reason=reason)
