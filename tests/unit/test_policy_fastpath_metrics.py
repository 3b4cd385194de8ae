"""The engine's per-policy counts without the values' locks (`metrics.count_policies`): the
same series and values as prometheus-client's own `observe` and `inc`, and the locks again as
soon as a second thread decides."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, ClassVar

from pydantic import BaseModel

from sendguard.engine import Engine, OnError, PolicyBinding
from sendguard.metrics import Metrics, PolicySeries, count_policies
from sendguard.policy import PolicyContext
from sendguard.store.sqlite import SQLiteStore
from sendguard.testing import FakeClock, make_delivery
from sendguard.verdict import Action, PolicyOutcome, Verdict

AMOUNTS = [0.0, 0.00005, 0.0001, 0.00010001, 0.0025, 0.7, 1.0, 3.0, 0.0001, 2e-7]
ACTIONS = [Action.FORWARD, Action.DELAY, Action.HOLD, Action.DROP, Action.HOLD] * 2
VERDICTS = {
    Action.FORWARD: Verdict.forward("f"),
    Action.HOLD: Verdict.hold("h"),
    Action.DROP: Verdict.drop("d"),
}


def _outcome(name: str, amount: float, action: Action, failed: bool) -> PolicyOutcome:
    verdict = VERDICTS.get(action) or Verdict.delay(make_delivery().created_at, "later")
    return PolicyOutcome(name, verdict, error="E: x" if failed else None, seconds=amount)


def _families(metrics: Metrics) -> list[str]:
    return [
        line
        for line in metrics.render().decode().splitlines()
        if line.startswith("sendguard_")
        and any(f in line for f in ("decisions", "policy_duration", "policy_errors"))
    ]


def _counted(owner: bool) -> Metrics:
    ours = Metrics()
    ours.expect_policies([("a", "enforce"), ("b", "shadow")])
    series = [PolicySeries(ours, "a", "enforce"), PolicySeries(ours, "b", "shadow")]
    assert all(s.unlocked() for s in series)
    for i, (amount, action) in enumerate(zip(AMOUNTS, ACTIONS, strict=True)):
        outcomes = [
            _outcome("a", amount, action, failed=i % 3 == 0),
            _outcome("b", amount * 2, ACTIONS[-1 - i], failed=False),
        ]
        count_policies(series, outcomes, threading.get_ident() if owner else None)
    return ours


def _library() -> Metrics:
    theirs = Metrics()
    theirs.expect_policies([("a", "enforce"), ("b", "shadow")])
    for i, (amount, action) in enumerate(zip(AMOUNTS, ACTIONS, strict=True)):
        theirs.policy_duration.labels(policy="a").observe(amount)
        theirs.decisions.labels("a", action.value, "enforce").inc()
        if i % 3 == 0:
            theirs.policy_errors.labels(policy="a").inc()
        theirs.policy_duration.labels(policy="b").observe(amount * 2)
        theirs.decisions.labels("b", ACTIONS[-1 - i].value, "shadow").inc()
    return theirs


def test_counts_on_the_owner_thread_are_the_library_s_own() -> None:
    theirs = _families(_library())
    assert _families(_counted(owner=True)) == theirs
    assert _families(_counted(owner=False)) == theirs  # through the values' locks
    assert 'sendguard_policy_errors_total{policy="a"} 4.0' in theirs
    assert 'sendguard_policy_duration_seconds_bucket{le="0.0001",policy="a"} 5.0' in theirs


def test_counts_from_another_thread_take_the_locks() -> None:
    ours = Metrics()
    series = [PolicySeries(ours, "a", "enforce")]
    owner = threading.get_ident()
    outcome = [_outcome("a", 0.001, Action.HOLD, failed=False)]
    worker = threading.Thread(target=count_policies, args=(series, outcome, owner))
    calls: list[Any] = []
    lock = series[0].verdicts[Action.HOLD]._value._lock

    class Watched:
        def __enter__(self) -> None:
            calls.append(threading.get_ident())
            lock.acquire()

        def __exit__(self, *exc: object) -> None:
            lock.release()

    series[0].verdicts[Action.HOLD]._value._lock = Watched()
    worker.start()
    worker.join()
    count_policies(series, outcome, owner)  # the owner: no lock
    assert calls == [worker.ident]
    sample = ours.registry.get_sample_value
    labels = {"policy": "a", "verdict": "hold", "mode": "enforce"}
    assert sample("sendguard_decisions_total", labels) == 2


def test_a_value_of_another_kind_is_not_counted_unlocked() -> None:
    series = PolicySeries(Metrics(), "a", "enforce")

    class Shared:  # as prometheus-client's MmapedValue: inc writes a file a scrape reads
        def __init__(self) -> None:
            self.added: list[float] = []

        def inc(self, amount: float) -> None:
            self.added.append(amount)

    series.errors._value = Shared()
    assert not series.unlocked()


class Scripted:
    Options: ClassVar[type[BaseModel]] = BaseModel

    def __init__(self, verdict: Verdict) -> None:
        self._verdict = verdict

    async def evaluate(self, delivery: Any, ctx: PolicyContext) -> Verdict:
        return self._verdict


async def test_the_engine_counts_locked_for_good_once_another_thread_decides(
    store: SQLiteStore,
) -> None:
    metrics = Metrics()
    eng = Engine(
        [
            PolicyBinding("fine", Scripted(Verdict.forward("ok"))),
            PolicyBinding("boom", Scripted("no verdict"), on_error=OnError.FORWARD),  # type: ignore[arg-type]
        ],
        store,
        FakeClock(),
        metrics,
    )
    await eng.decide(make_delivery())
    assert eng._owner == threading.get_ident()

    def elsewhere() -> None:
        asyncio.run(eng.decide(make_delivery()))

    worker = threading.Thread(target=elsewhere)
    worker.start()
    worker.join()
    assert eng._owner is None
    await eng.decide(make_delivery())
    assert eng._owner is None  # the first thread no longer counts unlocked
    sample = metrics.registry.get_sample_value
    labels = {"policy": "fine", "verdict": "forward", "mode": "enforce"}
    assert sample("sendguard_decisions_total", labels) == 3
    assert sample("sendguard_policy_errors_total", {"policy": "boom"}) == 3
    assert sample("sendguard_policy_duration_seconds_count", {"policy": "boom"}) == 3


async def test_a_multiprocess_series_is_never_counted_unlocked(store: SQLiteStore) -> None:
    eng = Engine(
        [PolicyBinding("fine", Scripted(Verdict.forward("ok")))], store, FakeClock(), Metrics()
    )
    assert eng._one_process
    series = eng._meters["fine", eng.policies[0].mode]
    series._sum = object()  # as a value of multiprocess mode
    eng.reconfigure(eng.policies, None)
    assert not eng._one_process
    assert eng._counting() is None
