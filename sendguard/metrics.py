"""The Prometheus metrics of one sendguard process (prefix `sendguard_`), registered once.

Every family lives in one registry, with the process's own (`process_*`, `python_*`) and
`sendguard_build_info`. Counters are pre-initialised for the label values known up front
(ingresses, outcomes, states, configured policies and upstreams), so `rate()` and `increase()`
see a 0 from the first scrape instead of no series until the first event.

Under `serve --workers N` each worker runs with prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, a private directory of the supervisor): sendguard's counters and
histograms are written to per-worker files, and a scrape — whichever worker answers it — sums
every worker's files, a dead worker's too (its counts happened). Gauges are not summed: each
is either computed by the answering worker at scrape time from the shared store (queue ages,
states, store health) or the same in every worker (the config, the build), so that worker's
own value is the answer; so are the `python_*` families. The `process_*` families cover the
whole service, the supervisor and every worker (sendguard/service_process.py).
"""

from __future__ import annotations

import os
import platform
import warnings
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from pathlib import Path
from threading import get_ident
from typing import TypeVar, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.values import MutexValue

from sendguard import __version__
from sendguard.message import DeliveryState
from sendguard.service_process import ServiceProcessCollector
from sendguard.verdict import Action, PolicyOutcome

M = TypeVar("M", bound=MetricWrapperBase)

# `*_created` series double the exposition for no use here.
disable_created_metrics()  # type: ignore[no-untyped-call]

INGRESSES = ("smtp", "http", "sendgrid", "postmark", "mailgun")
"""The `ingress` label of each way in: the SMTP listener, the JSON API, the ESP-compatible APIs."""
REFUSAL_REASONS = ("disk_full", "io_error", "read_only", "unavailable")
"""The `reason` of `sendguard_messages_refused_total`: `StoreUnavailable.kind`."""
OUTCOMES = (DeliveryState.SENT, DeliveryState.DEFERRED, DeliveryState.FAILED, DeliveryState.DROPPED)
"""The `outcome` of `sendguard_deliveries_total`."""
UPSTREAM_ERRORS = ("transient", "permanent", "unexpected")
"""The `kind` of `sendguard_upstream_errors_total`."""
WEBHOOK_OUTCOMES = ("sent", "retried", "abandoned")
NOTIFY_CHANNELS = ("webhook", "email")
NOTIFY_OUTCOMES = ("sent", "retried", "failed")

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""The environment variable naming the multiprocess directory of `serve --workers N`: set for
its workers, never for a process whose counts are not the service's (a simulation's replay)."""

_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_NETWORK = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _Summed(Collector):
    """Every worker's counters and histograms, summed from their multiprocess files."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def collect(self) -> Iterable[Metric]:
        files = [
            str(path)
            for kind in ("counter", "histogram")
            for path in sorted(self._directory.glob(f"{kind}_*.db"))
        ]
        merged: Iterable[Metric] = MultiProcessCollector.merge(  # type: ignore[no-untyped-call]
            files, accumulate=True
        )
        return merged


class _Local(Collector):
    """What one registry has besides sendguard's counters and histograms (summed elsewhere)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return [
            family
            for family in self._registry.collect()
            if not (family.name.startswith("sendguard_") and family.type in _SUMMED)
        ]


_SUMMED = ("counter", "histogram")


class Tally:
    """One counter child's `inc(1)`, without the checks `Counter.inc` makes on every call.

    The engine counts six verdicts per decision: prometheus-client's `inc` checks that the
    child is not a parent and that the amount is not negative, then takes the value's lock;
    this takes the lock only (the value is the child's own, in one process or under
    multiprocess mode alike; a labelled family's parent has none, and fails here). The
    library is pinned (requirements.lock); `tests/unit/test_metrics.py` holds the exposition
    of these to the library's own `inc` and `observe`.
    """

    __slots__ = ("_value",)

    def __init__(self, child: Counter) -> None:
        # prometheus-client's own value of the child (private to it, hence the pin and test).
        self._value = child._value

    def inc(self) -> None:
        """Count one."""
        self._value.inc(1)


class Timing:
    """One histogram child's `observe`, without the checks `Histogram.observe` makes on every
    call and with its bucket found by bisection (see `Tally`)."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Histogram) -> None:
        # prometheus-client's own values of the child (private to it, hence the pin and test).
        self._sum = child._sum
        self._bounds = tuple(child._upper_bounds)
        self._buckets = tuple(child._buckets)

    def observe(self, amount: float) -> None:
        """Observe `amount` (seconds): its sum, and the first bucket whose bound holds it."""
        self._sum.inc(amount)
        self._buckets[bisect_left(self._bounds, amount)].inc(1)


class PolicySeries:
    """Every series of one configured policy (its name and mode), looked up once: its duration
    histogram, its error counter and a verdict counter per action. A decision counts each
    configured policy once (`count_policies`)."""

    __slots__ = ("_bounds", "_buckets", "_sum", "_values", "duration", "errors", "verdicts")

    def __init__(self, metrics: Metrics, name: str, mode: str) -> None:
        self.duration = Timing(metrics.policy_duration.labels(policy=name))
        self.errors = Tally(metrics.policy_errors.labels(policy=name))
        self.verdicts = {a: Tally(metrics.decisions.labels(name, a.value, mode)) for a in Action}
        # prometheus-client's own values (private to it: pinned, `tests/unit/test_metrics.py`
        # and `test_policy_fastpath_metrics.py` hold the exposition to the library's own).
        self._sum = self.duration._sum
        self._bounds = self.duration._bounds
        self._buckets = self.duration._buckets
        self._values = {a: t._value for a, t in self.verdicts.items()}

    def unlocked(self) -> bool:
        """Whether every value is prometheus-client's value of one process (`MutexValue`),
        whose float `count_policies` may add to itself (not in multiprocess mode, whose
        values write a file shared with the scrape)."""
        values = [self._sum, self.errors._value, *self._buckets, *self._values.values()]
        return all(type(v) is MutexValue for v in values)


def count_policies(
    series: Sequence[PolicySeries], outcomes: Sequence[PolicyOutcome], owner: int | None
) -> None:
    """Count one decision: each policy's duration, verdict and error, in `series` (one per
    outcome, in order).

    `owner`: the thread that makes every count of these series, when all are `unlocked`
    (`Engine` counts on its event loop's thread, and nothing else counts them). From that
    thread the values' floats are added to as `MutexValue.inc` adds (the same float
    additions, in the same order), without taking each value's lock: 18 lock round trips and
    36 Python calls a decision, about 60,000 instructions. The lock orders increments made
    from several threads; made from one, they cannot interleave, and a scrape reads a float
    that one store replaced whole (under the GIL) either way. From any other thread, or
    with `owner` None, each count takes the value's lock as prometheus-client does.
    """
    if owner is not None and get_ident() == owner:
        for s, outcome in zip(series, outcomes, strict=True):
            seconds = outcome.seconds
            value = s._sum
            value._value += seconds
            value = s._buckets[bisect_left(s._bounds, seconds)]
            value._value += 1
            value = s._values[outcome.verdict.action]
            value._value += 1
            if outcome.error is not None:
                value = s.errors._value
                value._value += 1
        return
    for s, outcome in zip(series, outcomes, strict=True):
        s.duration.observe(outcome.seconds)
        s.verdicts[outcome.verdict.action].inc()
        if outcome.error is not None:
            s.errors.inc()


class Metrics:
    """Every metric family, in a registry of its own (so tests can run several apps at once)."""

    def __init__(self, summed: Path | None = None) -> None:
        """`summed`: the multiprocess directory shared by the workers of one supervisor
        (PROMETHEUS_MULTIPROC_DIR, which prometheus-client read when imported); None for
        one process."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}
        r = self.registry
        self.messages_refused = Counter(
            "sendguard_messages_refused",
            "Messages refused (SMTP 451, HTTP 503) because the store could not commit them, by"
            " ingress and reason (disk_full, io_error, read_only, unavailable)",
            ["ingress", "reason"],
            registry=r,
        )
        self.messages_received = Counter(
            "sendguard_messages_received",
            "Messages accepted, by ingress",
            ["ingress"],
            registry=r,
        )
        self.decisions = Counter(
            "sendguard_decisions",
            "Policy verdicts, by policy, verdict and mode",
            ["policy", "verdict", "mode"],
            registry=r,
        )
        self.policy_errors = Counter(
            "sendguard_policy_errors",
            "Policies that raised or ran out of their time budget (counted as their on_error)",
            ["policy"],
            registry=r,
        )
        self.deliveries_outcomes = Counter(
            "sendguard_deliveries",
            "Deliveries that reached an outcome",
            ["outcome"],
            registry=r,
        )
        # Not `sendguard_deliveries`: that is the counter's family (`sendguard_deliveries_total`),
        # and one registry (or a parser) cannot hold a gauge and a counter of one name.
        self.deliveries_by_state = Gauge(
            "sendguard_deliveries_in_state",
            "Deliveries currently in each state",
            ["state"],
            registry=r,
        )
        self.policy_duration = Histogram(
            "sendguard_policy_duration_seconds",
            "Time a policy took for one delivery",
            ["policy"],
            buckets=_FAST,
            registry=r,
        )
        self.ingress_duration = Histogram(
            "sendguard_ingress_duration_seconds",
            "Time from a complete message to its reply",
            ["ingress"],
            buckets=_NETWORK,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "sendguard_upstream_duration_seconds",
            "Time the upstream took for one delivery",
            ["upstream"],
            buckets=_NETWORK,
            registry=r,
        )
        self.upstream_errors = Counter(
            "sendguard_upstream_errors",
            "Upstream failures, by kind (transient, permanent)",
            ["upstream", "kind"],
            registry=r,
        )
        self.review_notifications = Counter(
            "sendguard_review_notifications",
            "Reviewer notifications, by channel (webhook, email) and outcome (sent, retried,"
            " failed: given up)",
            ["channel", "outcome"],
            registry=r,
        )

        self.config_info = Gauge(
            "sendguard_config_info",
            "The running config: 1 for its sha256 (the config file's bytes)",
            ["hash"],
            registry=r,
        )
        self.webhook_events = Counter(
            "sendguard_webhook_events",
            "Outbound webhook posts, by outcome (sent, retried, abandoned)",
            ["outcome"],
            registry=r,
        )

        self.hold_expiry = Gauge(
            "sendguard_review_hold_expiry_seconds",
            "review.hold_expiry of the running config",
            registry=r,
        )
        self.held_oldest = Gauge(
            "sendguard_held_oldest_seconds",
            "How long the oldest delivery held by a policy has waited for review",
            registry=r,
        )
        self.dispatch_lag = Gauge(
            "sendguard_dispatch_lag_seconds",
            "How far behind its due time the most overdue waiting delivery is",
            registry=r,
        )
        self.store_up = Gauge(
            "sendguard_store_up", "1 if the store answered the last scrape's queries", registry=r
        )
        self.store_query = Gauge(
            "sendguard_store_query_seconds",
            "How long the last scrape's store queries took",
            registry=r,
        )

        self.build_info = Gauge(
            "sendguard_build_info",
            "1, labelled with the running sendguard's version and Python",
            ["version", "python", "implementation"],
            registry=r,
        )
        self.build_info.labels(
            version=__version__,
            python=platform.python_version(),
            implementation=platform.python_implementation(),
        ).set(1)
        # The process's CPU, memory, file descriptors and start time; the interpreter's version
        # and garbage collections: what an operator's standard dashboards expect. Under
        # workers (`summed`) the process families cover the whole service: the supervisor (this
        # worker's parent) and every process below it (sendguard/service_process.py).
        if summed is not None and Path("/proc/self/stat").exists():
            r.register(ServiceProcessCollector(os.getppid()))
        else:
            ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._preset()
        self._exposed = self.registry
        if summed is not None:
            self._exposed = CollectorRegistry(auto_describe=False)
            self._exposed.register(_Summed(summed))
            self._exposed.register(_Local(self.registry))

    def _preset(self) -> None:
        """Create the series whose label values are known without any config."""
        for ingress in INGRESSES:
            self.messages_received.labels(ingress=ingress)
            for reason in REFUSAL_REASONS:
                self.messages_refused.labels(ingress=ingress, reason=reason)
        for outcome in OUTCOMES:
            self.deliveries_outcomes.labels(outcome=outcome.value)
        for state in DeliveryState:
            self.deliveries_by_state.labels(state=state.value)
        for event in WEBHOOK_OUTCOMES:
            self.webhook_events.labels(outcome=event)
        for channel in NOTIFY_CHANNELS:
            for outcome_ in NOTIFY_OUTCOMES:
                self.review_notifications.labels(channel, outcome_)
        for ingress in ("smtp", "http"):  # the two ingresses that time their replies
            self.ingress_duration.labels(ingress=ingress)

    def kept(self, family: M, *values: str) -> M:
        """`family.labels(*values)`, the child kept after the first call: `labels()` checks
        and looks up the values under a lock (~10 µs on the build machine), and the ingresses
        and the dispatcher count or time every message."""
        key = (id(family), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*values)
        return cast(M, child)

    def expect_policies(self, policies: Iterable[tuple[str, str]]) -> None:
        """Create every series of these (policy name, mode) pairs: a verdict of each kind,
        errors and durations (kept after a reload removes a policy, as counters must be)."""
        for name, mode in policies:
            for action in Action:
                self.decisions.labels(name, action.value, mode)
            self.policy_errors.labels(policy=name)
            self.policy_duration.labels(policy=name)

    def expect_upstreams(self, labels: Iterable[str]) -> None:
        """Create the series of these upstreams (the configured ones, after start or reload)."""
        for label in labels:
            self.upstream_duration.labels(upstream=label)
            for kind in UPSTREAM_ERRORS:
                self.upstream_errors.labels(upstream=label, kind=kind)

    def set_config(self, digest: str, hold_expiry: float | None = None) -> None:
        """Show `digest` as the running config's hash (and no other)."""
        with warnings.catch_warnings():
            # Under workers prometheus-client warns that the multiprocess files keep the old
            # series; gauges are rendered from this process's registry (see the module
            # docstring), where clearing works.
            warnings.filterwarnings("ignore", "Clearing labels", UserWarning)
            self.config_info.clear()
        self.config_info.labels(hash=digest).set(1)
        if hold_expiry is not None:
            self.hold_expiry.set(hold_expiry)

    def set_states(self, counts: dict[DeliveryState, int]) -> None:
        """Update the `sendguard_deliveries_in_state{state}` gauge."""
        for state, count in counts.items():
            self.deliveries_by_state.labels(state=state.value).set(count)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (every worker's, summed)."""
        return generate_latest(self._exposed)
