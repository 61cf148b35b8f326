"""Notification values, Slack and JSON bodies, and which status changes notify."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from segue.api import GateStatus, RolloutStatus
from segue.engine import PhaseChanged
from segue.notify import (
    Notification,
    WebhookTarget,
    json_payload,
    notifications_for,
    payload,
    slack_payload,
    summary,
)
from segue.notify.types import KINDS
from tests.unit.conftest import Sim, analysis, gate_round, make_spec, verdict

AT = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
GATE = GateStatus(name="error-rate", value=0.12, legacy_value=0.01, bound="<= 0.05")


def note(**overrides: object) -> Notification:
    values: dict[str, object] = {
        "kind": "RollbackStarted",
        "namespace": "shop",
        "rollout": "checkout",
        "phase": "RollingBack",
        "step": 3,
        "weight": 25,
        "message": "rolling back (immediate) from 25%",
        "time": AT,
        "total_steps": 7,
        "previous_phase": "Progressing",
        "gate": GATE,
    }
    values.update(overrides)
    return Notification(**values)  # type: ignore[arg-type]


def test_json_payload_has_every_field_camel_case() -> None:
    body = json_payload(note())
    assert body == {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Notification",
        "event": "RollbackStarted",
        "namespace": "shop",
        "rollout": "checkout",
        "phase": "RollingBack",
        "previousPhase": "Progressing",
        "step": 3,
        "totalSteps": 7,
        "weight": 25,
        "message": "rolling back (immediate) from 25%",
        "time": "2026-03-01T12:05:00Z",
        "gate": {"name": "error-rate", "value": 0.12, "legacyValue": 0.01, "bound": "<= 0.05"},
        "summary": summary(note()),
    }
    json.dumps(body, allow_nan=False)


def test_json_payload_keeps_its_shape_without_a_gate_and_never_emits_nan() -> None:
    body = json_payload(note(kind="PhaseChanged", gate=None, previous_phase=None))
    assert body["gate"] is None and body["previousPhase"] is None
    nan = json_payload(
        note(gate=GateStatus(name="latency", value=float("nan"), legacy_value=float("inf")))
    )
    assert nan["gate"] == {"name": "latency", "value": None, "legacyValue": None, "bound": ""}
    json.dumps(nan, allow_nan=False)


def test_slack_text_names_rollout_phase_step_weight_and_reason() -> None:
    body = slack_payload(note())
    text = body["text"]
    for part in ("shop/checkout", "RollingBack", "step 3", "weight 25%", "error-rate", "0.12"):
        assert part in text
    # The bound's "<" is escaped, or Slack would read it as the start of a link.
    assert "bound &lt;= 0.05" in text and "<=" not in text
    assert text.isascii()
    json.dumps(body, allow_nan=False)


def test_summary_names_the_gate_once() -> None:
    message = "gate error-rate failed 1/1: value 0.12 (legacy 0.01), bound <= 0.05"
    text = summary(note(message=message))
    assert text.count("error-rate") == 1 and text.endswith(message)


def test_slack_blocks_are_valid_shapes() -> None:
    body = slack_payload(note())
    blocks = body["blocks"]
    assert [b["type"] for b in blocks] == ["section", "section", "context"]
    assert blocks[0]["text"]["type"] == "mrkdwn"
    assert "*shop/checkout is rolling back*" in blocks[0]["text"]["text"]
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields == [
        "*Phase*\nProgressing -&gt; RollingBack",
        "*Step*\n3/7",
        "*Weight*\n25%",
        "*Gate*\nerror-rate = 0.12 (legacy 0.01), bound &lt;= 0.05",
    ]
    assert "2026-03-01T12:05:00Z" in blocks[2]["elements"][0]["text"]


def test_slack_clips_long_messages_to_slack_limits() -> None:
    body = slack_payload(note(message="x" * 5000))
    assert len(body["blocks"][0]["text"]["text"]) <= 3000


def test_approval_needed_says_how_to_approve() -> None:
    n = note(kind="ApprovalNeeded", phase="AwaitingApproval", gate=None, step=4, weight=25)
    hint = "kubectl annotate rollouts.segue.dev/checkout -n shop segue.dev/approve=4"
    assert hint in summary(n)
    assert any(hint in str(b) for b in slack_payload(n)["blocks"])
    assert "awaits approval of step 4" in slack_payload(n)["text"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_a_readable_headline(kind: str) -> None:
    n = note(kind=kind)
    assert "shop/checkout" in slack_payload(n)["text"]
    assert json_payload(n)["event"] == kind


def test_payload_picks_the_format() -> None:
    assert payload("slack", note()) == slack_payload(note())
    assert payload("json", note()) == json_payload(note())


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        note(kind="Exploded")


def test_target_filters_kinds_and_hides_its_url() -> None:
    url = "https://hooks.slack.com/services/T000/B000/secret-token"
    all_kinds = WebhookTarget(url, "slack")
    some = WebhookTarget.of(url, "json", ["RollbackStarted", "RolledBack"])
    assert all_kinds.wants("PhaseChanged") and some.wants("RolledBack")
    assert not some.wants("PhaseChanged")
    assert "secret-token" not in repr(some) and "hooks.slack.com" in repr(some)
    assert some == WebhookTarget.of(url, "json", {"RolledBack", "RollbackStarted"})
    with pytest.raises(ValueError, match="kinds"):
        WebhookTarget.of(url, "json", ["Typo"])
    with pytest.raises(ValueError, match="format"):
        WebhookTarget.of(url, "xml")
    with pytest.raises(ValueError, match="http"):
        WebhookTarget("file:///etc/passwd")


# Which status changes notify: driven by the real engine, so the history entries the
# notifications read are the ones the engine writes.


def _progressing() -> Sim:
    sim = Sim(make_spec(risk="low", hold="1s", analysis=analysis()))
    sim.tick()
    sim.tick(1)
    assert sim.phase() == "Progressing" and sim.st.step == 1
    return sim


def changes(sim: Sim) -> list[PhaseChanged]:
    assert sim.last is not None
    return [a for a in sim.last.actions if isinstance(a, PhaseChanged)]


def _step(sim: Sim, seconds: float = 1) -> tuple[RolloutStatus, RolloutStatus]:
    before = sim.st.model_copy(deep=True)
    sim.tick(seconds)
    return before, sim.st


def test_gate_rollback_carries_the_gate_and_its_numbers() -> None:
    sim = _progressing()
    sim.gates = gate_round(sim.now, verdict("errors", "Fail", value=0.12, legacy=0.01))
    before, after = _step(sim)
    (n,) = notifications_for("shop", "checkout", before, after, AT, changes(sim))
    assert (n.kind, n.phase, n.previous_phase) == ("RollbackStarted", "RollingBack", "Progressing")
    assert n.gate is not None
    assert (n.gate.name, n.gate.value, n.gate.legacy_value, n.gate.bound, n.gate.verdict) == (
        "errors",
        0.12,
        0.01,
        "<= 0.05",
        "Fail",
    )
    assert "gate errors" in n.message and n.time == AT
    assert n.total_steps == after.total_steps


def test_abort_rollback_has_no_gate_then_rolled_back() -> None:
    sim = _progressing()
    sim.annotations["segue.dev/abort"] = "bad release"
    before, after = _step(sim)
    (n,) = notifications_for("shop", "checkout", before, after, AT, changes(sim))
    assert n.kind == "RollbackStarted" and n.gate is None
    assert "bad release" in n.message
    before, after = _step(sim)
    (done,) = notifications_for("shop", "checkout", before, after, AT, changes(sim))
    assert done.kind == "RolledBack" and done.weight == 0


def test_no_change_no_notification() -> None:
    sim = _progressing()
    before, after = _step(sim, 0)
    assert notifications_for("shop", "checkout", before, after, AT, changes(sim)) == ()


def test_new_rollout_and_approval() -> None:
    steps = [{"setWeight": 10}, {"approval": {}}, {"setWeight": 50}]
    sim = Sim(make_spec(risk=None, steps=steps))
    sim.tick()
    (first,) = notifications_for("shop", "checkout", None, sim.st, AT, changes(sim))
    assert first.kind == "PhaseChanged" and first.previous_phase is None
    before, after = _step(sim)
    (n,) = notifications_for("shop", "checkout", before, after, AT, changes(sim))
    assert (n.kind, n.step) == ("ApprovalNeeded", 1)


def test_gate_pause_is_gate_failed() -> None:
    sim = _progressing()
    sim.spec = make_spec(
        risk="low",
        hold="1s",
        analysis=analysis({"name": "latency", "query": "q", "max": 1.0, "onFailure": "pause"}),
    )
    sim.gates = gate_round(sim.now, verdict("latency", "Fail", on_failure="pause", value=2.5))
    before, after = _step(sim)
    assert after.phase == "Paused" and after.paused_reason == "GateFailed"
    (n,) = notifications_for("shop", "checkout", before, after, AT, changes(sim))
    assert n.kind == "GateFailed" and n.gate is not None and n.gate.name == "latency"
    assert "gate latency failed" in summary(n)


def test_payloads_cap_copied_texts() -> None:
    huge = "ü" * 100_000
    # Built unchecked: the API model would cap these itself; the payloads must not rely on it.
    gate = GateStatus.model_construct(name="g" * 1000, value=0.1, legacy_value=0.2, bound=huge)
    n = note(message=huge, gate=gate)
    body = json_payload(n)
    assert len(body["message"].encode()) <= 1024 and body["message"].endswith("…")
    assert len(body["gate"]["name"].encode()) <= 256
    assert len(body["gate"]["bound"].encode()) <= 256
    assert len(json.dumps(body).encode()) < 16 * 1024
    slack = slack_payload(n)
    assert len(json.dumps(slack).encode()) < 16 * 1024
    assert len(summary(n).encode()) < 2 * 1024
