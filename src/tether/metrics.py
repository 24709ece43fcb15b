"""Prometheus metrics, one registry per running app (so tests can build many apps)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "tether_http_requests", "HTTP requests served", ["route", "method", "status"], registry=r
        )
        self.http_latency = Histogram(
            "tether_http_request_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.decisions = Counter("tether_decisions", "Policy decisions", ["effect", "enforcement"], registry=r)
        self.policy_evaluations = Counter(
            "tether_policy_evaluations",
            "Cedar evaluations by whether the answer was evaluated or reused from an equal earlier question",
            ["answer"],
            registry=r,
        )
        self.token_exchanges = Counter("tether_token_exchanges", "Token exchanges", ["outcome"], registry=r)
        self.audit_events = Counter("tether_audit_events", "Audit events made durable", registry=r)
        self.audit_batch = Histogram(
            "tether_audit_batch_size",
            "Events per audit commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.approvals_pending = Gauge(
            "tether_approvals_pending", "Approvals waiting for a human", registry=r, multiprocess_mode="livemax"
        )
        self.upstream_calls = Counter(
            "tether_upstream_calls", "Calls forwarded upstream", ["gateway", "upstream", "outcome"], registry=r
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per label set (hot paths count every call)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = metric.labels(*labels)
            if len(self._children) < 4096:  # label values are bounded; past this, look up without keeping
                self._children[key] = found
        return found


__all__ = ["Metrics"]
