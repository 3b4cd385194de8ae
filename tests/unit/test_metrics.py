"""The metric children sendguard keeps instead of looking them up per message."""

from __future__ import annotations

import pytest

from sendguard.metrics import Metrics, Tally, Timing


def test_a_kept_child_is_the_labelled_series() -> None:
    metrics = Metrics()
    metrics.kept(metrics.messages_received, "http").inc()
    metrics.kept(metrics.messages_received, "http").inc()
    metrics.kept(metrics.ingress_duration, "smtp").observe(0.5)
    metrics.kept(metrics.upstream_errors, "smtp", "timeout").inc()
    sample = metrics.registry.get_sample_value
    assert sample("sendguard_messages_received_total", {"ingress": "http"}) == 2
    assert sample("sendguard_messages_received_total", {"ingress": "smtp"}) == 0
    assert sample("sendguard_ingress_duration_seconds_count", {"ingress": "smtp"}) == 1
    assert sample("sendguard_upstream_errors_total", {"upstream": "smtp", "kind": "timeout"}) == 1
    kept = metrics.kept(metrics.messages_received, "esp")
    assert kept is metrics.messages_received.labels(ingress="esp")
    assert metrics.kept(metrics.ingress_duration, "esp") is not kept  # one per family


def test_tally_and_timing_count_as_the_library_does() -> None:
    # The engine's per-policy counters and durations skip prometheus-client's checks and reach
    # its values directly: the exposition must be the library's own, bucket bounds included.
    ours, theirs = Metrics(), Metrics()
    amounts = [0.0, 0.00005, 0.0001, 0.00010001, 0.0025, 0.7, 1.0, 3.0, 0.0001]
    timing = Timing(ours.policy_duration.labels(policy="p"))
    tally = Tally(ours.decisions.labels("p", "hold", "enforce"))
    for amount in amounts:
        timing.observe(amount)
        tally.inc()
        theirs.policy_duration.labels(policy="p").observe(amount)
        theirs.decisions.labels("p", "hold", "enforce").inc()
    assert _families(ours) == _families(theirs)
    sample = ours.registry.get_sample_value
    assert sample("sendguard_policy_duration_seconds_bucket", {"policy": "p", "le": "0.0001"}) == 4
    assert sample("sendguard_policy_duration_seconds_bucket", {"policy": "p", "le": "+Inf"}) == 9
    assert (
        sample("sendguard_decisions_total", {"policy": "p", "verdict": "hold", "mode": "enforce"})
        == 9
    )


def test_a_family_without_its_labels_has_no_tally() -> None:
    with pytest.raises(AttributeError):
        Tally(Metrics().decisions)
    with pytest.raises(AttributeError):
        Timing(Metrics().policy_duration)


def _families(metrics: Metrics) -> list[str]:
    """The exposition of sendguard's counters and histograms (not the process's own)."""
    return [
        line
        for line in metrics.render().decode().splitlines()
        if line.startswith("sendguard_") and ("decisions" in line or "policy_duration" in line)
    ]
