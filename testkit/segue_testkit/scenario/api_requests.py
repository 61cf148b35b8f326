"""Counting the Kubernetes API requests the operator makes (its Events are POSTs of its
own, counted in segue_kube_requests_total like its writes)."""

from __future__ import annotations


def requests_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Requests per method from one ``Operator.requests()`` reading to a later one."""
    return {m: after[m] - before.get(m, 0) for m in after if after[m] - before.get(m, 0)}


def by_method(spent: dict[str, float]) -> str:
    return "  ".join(f"{m} {v:.0f}" for m, v in sorted(spent.items())) or "none"
