"""The operator's metrics: series per Rollout, bounded labels, removal, and /metrics."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import generate_latest

from segue.api import PHASES, GateStatus, RolloutStatus
from segue.controller.metrics import (
    REASON_KINDS,
    OperatorMetrics,
    rollback_reason,
)
from segue.engine import PhaseChanged


def status(**fields: Any) -> RolloutStatus:
    wire: dict[str, Any] = {"phase": "Progressing", "step": 2, "totalSteps": 7, "weight": 25}
    wire.update(fields)
    return RolloutStatus.model_validate(wire)


GATES = [
    {"name": "errors", "value": 0.01, "legacyValue": 0.02, "verdict": "Pass"},
    {"name": "latency", "value": 0.9, "legacyValue": 0.3, "verdict": "Fail"},
]


def text(m: OperatorMetrics) -> str:
    return generate_latest(m.registry).decode()


def value(m: OperatorMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_phase_is_a_state_set_with_step_and_weight() -> None:
    m = OperatorMetrics()
    m.observe("shop", "checkout", status())
    for phase in PHASES:
        got = value(m, "segue_rollout_phase", namespace="shop", rollout="checkout", phase=phase)
        assert got == (1.0 if phase == "Progressing" else 0.0)
    assert value(m, "segue_rollout_step", namespace="shop", rollout="checkout") == 2
    assert value(m, "segue_rollout_weight", namespace="shop", rollout="checkout") == 25
    m.observe("shop", "checkout", status(phase="RollingBack", weight=0))
    on = [
        p
        for p in PHASES
        if value(m, "segue_rollout_phase", namespace="shop", rollout="checkout", phase=p)
    ]
    assert on == ["RollingBack"]
    assert value(m, "segue_rollout_weight", namespace="shop", rollout="checkout") == 0


def test_a_status_without_phase_sets_no_phase() -> None:
    m = OperatorMetrics()
    m.observe("shop", "checkout", RolloutStatus())
    assert 'segue_rollout_phase{namespace="shop",phase="Pending",rollout="checkout"} 0.0' in (
        text(m)
    )
    assert " 1.0" not in "".join(
        line for line in text(m).splitlines() if line.startswith("segue_rollout_phase{")
    )


def test_gate_values_and_verdicts() -> None:
    m = OperatorMetrics()
    m.observe("shop", "checkout", status(gates=GATES))
    labels = {"namespace": "shop", "rollout": "checkout"}
    assert value(m, "segue_gate_value", **labels, gate="latency", version="new") == 0.9
    assert value(m, "segue_gate_value", **labels, gate="latency", version="legacy") == 0.3
    verdicts = {
        v: value(m, "segue_gate_verdict", **labels, gate="latency", verdict=v)
        for v in ("Pass", "Fail", "Inconclusive", "Error")
    }
    assert verdicts == {"Pass": 0, "Fail": 1, "Inconclusive": 0, "Error": 0}


def test_no_data_removes_the_value_series() -> None:
    m = OperatorMetrics()
    m.observe("shop", "checkout", status(gates=GATES))
    no_data = [{"name": "errors", "value": None, "legacyValue": 0.02, "verdict": "Inconclusive"}]
    m.observe("shop", "checkout", status(gates=no_data))
    labels = {"namespace": "shop", "rollout": "checkout", "gate": "errors"}
    assert value(m, "segue_gate_value", **labels, version="new") is None
    assert value(m, "segue_gate_value", **labels, version="legacy") == 0.02
    assert value(m, "segue_gate_verdict", **labels, verdict="Inconclusive") == 1


def test_a_gate_gone_from_the_status_loses_its_series() -> None:
    m = OperatorMetrics()
    m.observe("shop", "checkout", status(gates=GATES))
    m.observe("shop", "checkout", status(gates=GATES[:1]))
    assert 'gate="latency"' not in text(m)
    assert 'gate="errors"' in text(m)


def test_forget_removes_every_series_of_the_rollout() -> None:
    m = OperatorMetrics()
    m.observe("shop", "checkout", status(gates=GATES))
    m.observe("shop", "catalog", status(gates=GATES))
    m.rollback("shop", "checkout", "gate")
    m.rollback("shop", "checkout", "abort")
    assert 'rollout="checkout"' in text(m)
    m.forget("shop", "checkout")
    assert 'rollout="checkout"' not in text(m)
    assert 'rollout="catalog"' in text(m)
    m.forget("shop", "never-seen")  # harmless
    m.forget("shop", "catalog")
    assert "rollout=" not in text(m)


def test_rollback_reasons_are_bounded() -> None:
    m = OperatorMetrics()
    for reason in ("gate", "gate", "abort", "dependency", "gate errors failed: 0.2 > 0.05"):
        m.rollback("shop", "checkout", reason)
    counts = {
        r: value(m, "segue_rollbacks_total", namespace="shop", rollout="checkout", reason=r)
        for r in REASON_KINDS
    }
    assert counts == {"gate": 2, "abort": 1, "dependency": 1, "other": 1}
    reasons = {
        line.split('reason="')[1].split('"')[0]
        for line in text(m).splitlines()
        if line.startswith("segue_rollbacks_total{")
    }
    assert reasons == set(REASON_KINDS)


def change(actor: str = "segue", gate: bool = False) -> PhaseChanged:
    verdict = None
    if gate:
        verdict = GateStatus(
            name="errors",
            verdict="Fail",
            value=0.2,
            legacy_value=0.0,
            bound="<= 0.05",
            on_failure="rollback",
            failure_limit=1,
            message="too high",
        )
    return PhaseChanged(
        old="Progressing",
        new="RollingBack",
        paused_reason=None,
        message="rolling back",
        actor=actor,
        verdict=verdict,
        at=datetime(2026, 3, 1, 12, tzinfo=UTC),
    )


def test_rollback_reason_reads_the_phase_change() -> None:
    assert rollback_reason(change("gate errors", gate=True)) == "gate"
    assert rollback_reason(change("segue.dev/abort")) == "abort"
    assert rollback_reason(change("segue")) == "other"


def test_reconcile_timer_labels_ok_and_error() -> None:
    m = OperatorMetrics()
    # Both results exist before the first reconcile.
    assert value(m, "segue_reconcile_duration_seconds_count", result="error") == 0
    with m.reconcile_timer():
        pass
    with pytest.raises(RuntimeError), m.reconcile_timer():
        raise RuntimeError("boom")
    assert value(m, "segue_reconcile_duration_seconds_count", result="ok") == 1
    assert value(m, "segue_reconcile_duration_seconds_count", result="error") == 1


def test_notification_counters() -> None:
    m = OperatorMetrics()
    assert value(m, "segue_notifications_dropped_total") == 0
    m.notification_dropped()
    m.notification_failed()
    m.notification_failed()
    assert value(m, "segue_notifications_dropped_total") == 1
    assert value(m, "segue_notifications_failed_total") == 2


def test_registries_are_isolated() -> None:
    a, b = OperatorMetrics(), OperatorMetrics()
    a.observe("shop", "checkout", status())
    assert "checkout" not in text(b)


def test_serve_answers_get_metrics_over_http() -> None:
    m = OperatorMetrics()
    m.observe("shop", "checkout", status(gates=GATES))
    port = m.serve(0, "127.0.0.1")
    try:
        assert port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert resp.status == 200
            body = resp.read().decode()
        assert 'segue_rollout_weight{namespace="shop",rollout="checkout"} 25.0' in body
        assert "segue_reconcile_duration_seconds_bucket" in body
        with pytest.raises(RuntimeError):
            m.serve(0, "127.0.0.1")
    finally:
        m.close()


def test_decided_observes_and_counts_a_rollback_once() -> None:
    m = OperatorMetrics()
    progressing = status()
    rolling = status(phase="RollingBack")
    m.decided("shop", "checkout", None, progressing, {})
    m.decided("shop", "checkout", progressing, rolling, {}, [change("gate errors", gate=True)])
    m.decided("shop", "checkout", rolling, rolling, {})
    labels = {"namespace": "shop", "rollout": "checkout"}
    assert value(m, "segue_rollbacks_total", **labels, reason="gate") == 1
    assert value(m, "segue_rollout_phase", **labels, phase="RollingBack") == 1
