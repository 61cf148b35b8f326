from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from segue.api import HistoryEntry, RolloutStatus

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
