"""The Migration's models and its generated CRD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from segue.api.crd import MIGRATION_CRD_PATH, migration_crd, render
from segue.api.migration import (
    MAX_ROLLBACK_LOG,
    MSG_UNIQUE_MEMBERS,
    MSG_UNIQUE_WAVES,
    MSG_WAVE_MEMBERS,
    MigrationSpec,
    MigrationStatus,
    RollbackRecord,
    RollbackTrigger,
)

X = {"name": "a", "rollouts": ["x"]}
CHART_CRDS = Path(__file__).resolve().parents[2] / "charts" / "segue" / "crds"


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "waves": [
            {"name": "low", "rollouts": ["catalog"], "bakeTime": "5m"},
            {"name": "medium", "selector": {"matchLabels": {"risk": "medium"}}, "approval": True},
        ],
        **extra,
    }


def test_a_migration_parses_with_defaults() -> None:
    m = MigrationSpec.model_validate(spec())
    assert m.rollback_scope == "service"
    assert [w.name for w in m.waves] == ["low", "medium"]
    assert m.waves[1].selector is not None
    assert m.waves[1].selector.match_labels == {"risk": "medium"}
    assert m.to_wire()["waves"][0] == {"name": "low", "rollouts": ["catalog"], "bakeTime": "5m"}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"waves": [{"name": "a"}]}, MSG_WAVE_MEMBERS),
        ({"waves": [X, {"name": "a", "rollouts": ["y"]}]}, MSG_UNIQUE_WAVES),
        ({"waves": [X, {"name": "b", "rollouts": ["x"]}]}, MSG_UNIQUE_MEMBERS),
        ({"rollbackScope": "everything"}, "rollbackScope"),
        ({"waves": [{"name": "a", "rollouts": ["x"], "bakeTime": "721h"}]}, "bakeTime"),
        ({"waves": []}, "waves"),
    ],
)  # fmt: skip
def test_bad_migrations_are_refused_naming_the_problem(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as e:
        MigrationSpec.model_validate({**spec(), **patch})
    assert message in str(e.value)


def test_the_rollback_log_keeps_the_newest_entries() -> None:
    trigger = RollbackTrigger(rollout="cart", gate="error-rate", value=0.12, bound="<= 0.05")
    records = [
        RollbackRecord.model_validate(
            {
                "id": f"rb-{i}",
                "scope": "wave",
                "trigger": trigger,
                "initiatedAt": "2026-01-01T00:00:00Z",
            }
        )
        for i in range(1, MAX_ROLLBACK_LOG + 6)
    ]
    status = MigrationStatus.model_construct(rollbacks=records, waves=[], conditions=[])
    wire = status.to_wire()
    assert len(wire["rollbacks"]) == MAX_ROLLBACK_LOG
    assert wire["rollbacks"][-1]["id"] == f"rb-{MAX_ROLLBACK_LOG + 5}"
    assert wire["rollbacks"][0]["trigger"] == {
        "rollout": "cart",
        "gate": "error-rate",
        "value": 0.12,
        "bound": "<= 0.05",
    }


def test_the_migration_crd_is_namespaced_with_a_status_subresource() -> None:
    doc = migration_crd()
    assert doc["spec"]["scope"] == "Namespaced"
    assert doc["spec"]["names"]["shortNames"] == ["sgm"]
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:3] == ["Phase", "Wave", "Scope"]
    rules = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    assert any(r["message"] == MSG_UNIQUE_WAVES for r in rules)


def test_committed_migration_crd_and_chart_copy_are_up_to_date() -> None:
    text = MIGRATION_CRD_PATH.read_text(encoding="utf-8")
    assert text == render("migrations"), f"{MIGRATION_CRD_PATH.name} is stale: run `make crds`"
    assert yaml.safe_load(text) == migration_crd()
    assert (CHART_CRDS / MIGRATION_CRD_PATH.name).read_bytes() == MIGRATION_CRD_PATH.read_bytes()
