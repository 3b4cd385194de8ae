"""The Prometheus metrics of one sendguard process (prefix `sendguard_`), registered once.

Under `serve --workers N` each worker runs with prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, a private directory of the supervisor): counters and histograms
are written to per-worker files, and a scrape — whichever worker answers it — sums every
worker's files, a dead worker's too (its counts happened). Gauges are not summed: each one
is either computed by the answering worker at scrape time from the shared store (queue
ages, states, store health) or the same in every worker (the config), so that worker's own
value is the answer.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from sendguard.message import DeliveryState

# `*_created` series double the exposition for no use here (and read as a second
# `sendguard_deliveries` family to some parsers).
disable_created_metrics()  # type: ignore[no-untyped-call]

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


class _Gauges(Collector):
    """The gauges of one registry (its counters and histograms are summed elsewhere)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        return [family for family in self._registry.collect() if family.type == "gauge"]


class Metrics:
    """Every metric family, in a registry of its own (so tests can run several apps at once)."""

    def __init__(self, summed: Path | None = None) -> None:
        """`summed`: the multiprocess directory shared by the workers of one supervisor
        (PROMETHEUS_MULTIPROC_DIR, which prometheus-client read when imported); None for
        one process."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
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
        # The gauge shares its base name with the `sendguard_deliveries_total` counter, which
        # one prometheus_client registry refuses; in the text format the two names differ, so
        # the gauge lives in a registry of its own and both are rendered together.
        self.state_registry = CollectorRegistry(auto_describe=True)
        self.deliveries_by_state = Gauge(
            "sendguard_deliveries",
            "Deliveries currently in each state",
            ["state"],
            registry=self.state_registry,
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

        self._exposed = self.registry
        if summed is not None:
            self._exposed = CollectorRegistry(auto_describe=False)
            self._exposed.register(_Summed(summed))
            self._exposed.register(_Gauges(self.registry))

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
        """Update the `sendguard_deliveries{state}` gauge."""
        for state, count in counts.items():
            self.deliveries_by_state.labels(state=state.value).set(count)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (every worker's, summed)."""
        return generate_latest(self._exposed) + generate_latest(self.state_registry)
