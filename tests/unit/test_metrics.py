"""The metric children sendguard keeps instead of looking them up per message."""

from __future__ import annotations

from sendguard.metrics import Metrics


def test_the_kept_children_are_the_labelled_series() -> None:
    metrics = Metrics()
    metrics.received("http").inc()
    metrics.received("http").inc()
    metrics.ingress_timer("smtp").observe(0.5)
    sample = metrics.registry.get_sample_value
    assert sample("sendguard_messages_received_total", {"ingress": "http"}) == 2
    assert sample("sendguard_messages_received_total", {"ingress": "smtp"}) == 0
    assert sample("sendguard_ingress_duration_seconds_count", {"ingress": "smtp"}) == 1
    assert metrics.received("esp") is metrics.messages_received.labels(ingress="esp")
    assert metrics.ingress_timer("http") is metrics.ingress_duration.labels(ingress="http")
