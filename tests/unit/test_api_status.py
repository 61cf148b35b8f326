from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from segue.api import Condition, GateStatus, HistoryEntry, RolloutStatus
from segue.api.status import MAX_HANDLED_ANNOTATIONS, MAX_HISTORY
from segue.api.text import (
    MAX_GATE_TEXT_BYTES,
    MAX_HISTORY_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_REASON_BYTES,
    MAX_STATUS_BYTES,
    annotation_mark,
    wire_size,
)

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

WIRE: dict[str, Any] = {
    "phase": "RollingBack",
    "step": 3,
    "totalSteps": 9,
    "weight": 25,
    "targetWeight": 20,
    "observedGeneration": 4,
    "newRevision": "7d9f",
    "stepStartedAt": "2026-03-01T12:00:00Z",
    "message": "rolling back",
    "rollback": {
        "mode": "graceful",
        "fromWeight": 25,
        "startedAt": "2026-03-01T12:05:00.250000Z",
        "reason": "gate latency failed",
    },
    "handledAnnotations": {"segue.dev/abort": "bad"},
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "RollingBack",
            "message": "rolling back",
            "lastTransitionTime": "2026-03-01T12:05:00Z",
            "observedGeneration": 4,
        }
    ],
    "gates": [
        {
            "name": "latency",
            "value": 0.9,
            "legacyValue": 0.3,
            "bound": "<= 2x legacy",
            "verdict": "Fail",
            "consecutiveFailures": 3,
            "consecutiveNoData": 0,
            "failureLimit": 3,
            "onFailure": "rollback-graceful",
            "lastEvaluated": "2026-03-01T12:05:00Z",
            "message": "0.9 is 3x legacy 0.3 > 2x",
        }
    ],
    "history": [
        {
            "time": "2026-03-01T12:05:00Z",
            "step": 3,
            "weight": 25,
            "event": "RollingBack",
            "reason": "gate latency failed",
            "actor": "gate latency",
            "gate": "latency",
            "value": 0.9,
            "legacyValue": 0.3,
            "bound": "<= 2x legacy",
        }
    ],
}


def test_round_trip() -> None:
    status = RolloutStatus.model_validate(WIRE)
    assert status.rollback is not None
    assert status.rollback.started_at == datetime(2026, 3, 1, 12, 5, 0, 250000, tzinfo=UTC)
    assert status.to_wire() == WIRE


def test_kopf_bookkeeping_is_ignored() -> None:
    status = RolloutStatus.model_validate({**WIRE, "kopf": {"progress": {}}})
    assert "kopf" not in status.to_wire()


def test_empty_status() -> None:
    status = RolloutStatus.model_validate({})
    assert status.phase is None
    assert status.to_wire() == {
        "step": 0,
        "totalSteps": 0,
        "weight": 0,
        "targetWeight": 0,
        "conditions": [],
        "gates": [],
        "history": [],
    }


def test_times_are_written_in_utc_with_z() -> None:
    plus_two = timezone(timedelta(hours=2))
    entry = HistoryEntry(
        time=datetime(2026, 3, 1, 14, 0, tzinfo=plus_two), step=0, weight=0, event="x"
    )
    assert entry.model_dump(mode="json", by_alias=True)["time"] == "2026-03-01T12:00:00Z"
    naive = HistoryEntry(time=datetime(2026, 3, 1, 12, 0), step=0, weight=0, event="x")
    assert naive.time.tzinfo is UTC


# --- byte caps --------------------------------------------------------------------------

BIG = "x" * (200 * 1024)


def _size(text: str | None) -> int:
    return len((text or "").encode("utf-8"))


def _entry(reason: str = "r") -> dict[str, Any]:
    return {"time": "2026-03-01T12:00:00Z", "step": 1, "weight": 10, "event": "E", "reason": reason}


def test_texts_are_capped_when_parsed() -> None:
    status = RolloutStatus.model_validate(
        {
            **WIRE,
            "message": BIG,
            "rollback": {**WIRE["rollback"], "reason": BIG},
            "conditions": [{**WIRE["conditions"][0], "message": BIG, "reason": BIG}],
            "gates": [{**WIRE["gates"][0], "message": BIG, "bound": BIG}],
            "history": [{**WIRE["history"][0], "reason": BIG, "bound": BIG, "actor": BIG}],
        }
    )
    assert _size(status.message) == MAX_MESSAGE_BYTES and status.message.endswith("…")
    assert status.rollback is not None and _size(status.rollback.reason) == MAX_REASON_BYTES
    assert _size(status.conditions[0].message) == MAX_MESSAGE_BYTES
    assert _size(status.conditions[0].reason) <= 256
    assert _size(status.gates[0].message) == MAX_GATE_TEXT_BYTES
    assert _size(status.gates[0].bound) == MAX_GATE_TEXT_BYTES
    entry = status.history[0]
    assert _size(entry.reason) == MAX_REASON_BYTES
    assert _size(entry.bound) == MAX_GATE_TEXT_BYTES and _size(entry.actor) <= 256


def test_texts_assigned_later_are_capped_when_written() -> None:
    # The engine assigns fields and appends entries without validation.
    status = RolloutStatus.model_validate(WIRE)
    status.message = BIG
    status.conditions[0].message = BIG
    status.gates[0].message = BIG
    status.history.append(HistoryEntry(time=T, step=1, weight=1, event="E"))
    status.history[-1].reason = BIG
    status.handled_annotations = {"segue.dev/abort": BIG}
    wire = status.to_wire()
    assert _size(wire["message"]) == MAX_MESSAGE_BYTES
    assert _size(wire["conditions"][0]["message"]) == MAX_MESSAGE_BYTES
    assert _size(wire["gates"][0]["message"]) == MAX_GATE_TEXT_BYTES
    assert _size(wire["history"][-1]["reason"]) == MAX_REASON_BYTES
    assert wire["handledAnnotations"] == {"segue.dev/abort": annotation_mark(BIG)}
    assert wire_size(wire) < MAX_STATUS_BYTES


def test_handled_annotations_keep_short_values_and_digest_long_ones() -> None:
    status = RolloutStatus.model_validate(
        {"handledAnnotations": {"segue.dev/approve": "3", "segue.dev/abort": BIG}}
    )
    assert status.handled_annotations == {
        "segue.dev/approve": "3",
        "segue.dev/abort": annotation_mark(BIG),
    }
    # Read back, the marks stay what they were.
    again = RolloutStatus.model_validate(status.to_wire())
    assert again.handled_annotations == status.handled_annotations


def test_handled_annotations_drop_implausible_keys() -> None:
    many = {f"segue.dev/k{i}": "v" for i in range(20)}
    status = RolloutStatus.model_validate({"handledAnnotations": {"y" * 1000: "v", **many}})
    assert status.handled_annotations is not None
    assert len(status.handled_annotations) == MAX_HANDLED_ANNOTATIONS
    assert "y" * 1000 not in status.handled_annotations


def test_history_is_bounded_in_bytes_oldest_first() -> None:
    reasons = [f"{i:02d}" + "r" * 500 for i in range(MAX_HISTORY)]
    status = RolloutStatus.model_validate({"history": [_entry(r) for r in reasons]})
    wire = status.to_wire()
    kept = [h["reason"] for h in wire["history"]]
    assert wire_size(wire["history"]) <= MAX_HISTORY_BYTES
    assert 0 < len(kept) < MAX_HISTORY
    assert kept == reasons[-len(kept) :]  # the newest survive, in order
    # The model itself keeps everything; only what is written is trimmed.
    assert len(status.history) == MAX_HISTORY


def test_small_history_is_untouched() -> None:
    status = RolloutStatus.model_validate(WIRE)
    assert status.to_wire()["history"] == WIRE["history"]


def test_status_stays_under_64_kib_with_escaped_characters_everywhere() -> None:
    # A control character is one UTF-8 byte but six bytes of JSON ("\u0001"): the per-field
    # caps alone would add up to more than 64 KiB, so to_wire shortens further.
    nasty = "\x01" * 5000
    status = RolloutStatus.model_validate(
        {
            "message": nasty,
            "rollback": {**WIRE["rollback"], "reason": nasty},
            "conditions": [
                {**WIRE["conditions"][0], "type": f"T{i}", "message": nasty, "reason": nasty}
                for i in range(16)
            ],
            "gates": [
                {**WIRE["gates"][0], "name": f"g{i}", "message": nasty, "bound": nasty}
                for i in range(16)
            ],
            "history": [_entry(nasty) for _ in range(MAX_HISTORY)],
            "handledAnnotations": {"segue.dev/abort": nasty, "segue.dev/approve": "1"},
        }
    )
    wire = status.to_wire()
    assert wire_size(wire) < MAX_STATUS_BYTES
    assert wire["handledAnnotations"] == {
        "segue.dev/abort": annotation_mark(nasty),
        "segue.dev/approve": "1",
    }


_texts = st.text(max_size=4000) | st.builds(
    lambda c, n: c * n, st.characters(), st.integers(0, 70_000)
)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    message=_texts,
    reason=_texts,
    gate_message=_texts,
    bound=_texts,
    annotation=_texts,
    conditions=st.integers(0, 16),
    gates=st.integers(0, 16),
    history=st.integers(0, MAX_HISTORY),
)
def test_to_wire_stays_under_64_kib(
    message: str,
    reason: str,
    gate_message: str,
    bound: str,
    annotation: str,
    conditions: int,
    gates: int,
    history: int,
) -> None:
    status = RolloutStatus.model_validate(WIRE)
    status.message = message
    assert status.rollback is not None
    status.rollback.reason = reason
    status.conditions = [
        Condition(
            type=f"T{i}", status="True", reason=reason, message=message, last_transition_time=T
        )
        for i in range(conditions)
    ]
    status.gates = [
        GateStatus(name=f"g{i}", message=gate_message, bound=bound) for i in range(gates)
    ]
    status.history = [
        HistoryEntry(
            time=T, step=i, weight=1, event="E", reason=reason, actor=annotation, bound=bound
        )
        for i in range(history)
    ]
    status.handled_annotations = {"segue.dev/abort": annotation, "segue.dev/approve": annotation}
    wire = status.to_wire()
    assert wire_size(wire) < MAX_STATUS_BYTES
    assert wire_size(wire.get("history", [])) <= MAX_HISTORY_BYTES
    assert len(json.dumps(wire, ensure_ascii=False).encode("utf-8", "replace")) < MAX_STATUS_BYTES
    assert wire["handledAnnotations"]["segue.dev/abort"] == annotation_mark(annotation)
    # What was written parses back.
    RolloutStatus.model_validate(wire)
