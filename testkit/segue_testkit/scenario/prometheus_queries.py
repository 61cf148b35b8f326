"""How many queries a Prometheus has answered, from its own /metrics."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

QUERY_HANDLERS = ("/api/v1/query", "/api/v1/query_range")


def queries_served(prometheus: str) -> float:
    """Instant and range queries answered so far (prometheus_http_requests_total)."""
    with urllib.request.urlopen(f"{prometheus.rstrip('/')}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (
                s.name == "prometheus_http_requests_total"
                and s.labels.get("handler") in QUERY_HANDLERS
            ):
                total += s.value
    return total
