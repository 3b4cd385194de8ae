"""The metric children sendguard keeps instead of looking them up per message."""

from __future__ import annotations

from sendguard.metrics import Metrics


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
