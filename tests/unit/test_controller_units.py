"""Pieces of the controller that need no cluster: merge patches, the daemon filter, the
Prometheus credentials taken from a Rollout's Secret."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from segue.api.spec import Analysis
from segue.controller.gates import GateRunner
from segue.controller.handlers import needs_daemon
from segue.controller.reconcile import merge_patch


def test_merge_patch_nulls_removed_keys_recursively():
    old = {"phase": "Paused", "pausedReason": "Manual", "handled": {"a": "1", "b": "2"}}
    new = {"phase": "Progressing", "handled": {"a": "1"}}
    assert merge_patch(old, new) == {
        "phase": "Progressing",
        "pausedReason": None,
        "handled": {"b": None},
    }
    assert merge_patch(new, new) == {}
    # Lists are replaced whole, as a JSON merge patch does.
    assert merge_patch({"history": [1, 2]}, {"history": [2]}) == {"history": [2]}


def body(phase: str | None, generation: int = 1, observed: int | None = 1, ann: Any = None) -> Any:
    status = {} if phase is None else {"phase": phase, "observedGeneration": observed}
    return {"metadata": {"generation": generation, "annotations": ann or {}}, "status": status}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (body(None), True),
        (body("Progressing"), True),
        (body("AwaitingApproval"), True),
        (body("Succeeded"), False),
        (body("RolledBack"), False),
        (body("Failed", generation=2, observed=1), True),  # a corrected spec resumes
        (body("RolledBack", ann={"segue.dev/retry": "x"}), True),
        (body("Succeeded", ann={"segue.dev/pause": ""}), False),  # pause is a level, no work
    ],
)
def test_a_daemon_runs_only_while_there_is_work(obj: Any, expected: bool):
    assert needs_daemon(obj) is expected


def test_deleting_stops_the_daemon():
    obj = body("Progressing")
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert needs_daemon(obj) is False


class FakeSecrets:
    def __init__(self, data: dict[str, str]) -> None:
        self.data = data
        self.read_names: list[tuple[str, str]] = []

    async def read(self, namespace: str, name: str) -> dict[str, str]:
        self.read_names.append((namespace, name))
        return self.data


def test_prometheus_credentials_come_from_the_named_secret(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    secrets = FakeSecrets({"token": "s3cret", "ca.crt": "-----BEGIN CERTIFICATE-----\n"})
    runner = GateRunner(secrets, "http://default:9090")  # type: ignore[arg-type]
    analysis = Analysis.model_validate(
        {
            "prometheus": {
                "address": "https://prom.example:9091/",
                "secretRef": {"name": "prom-auth"},
                "timeout": "2s",
            },
            "gates": [{"name": "e", "template": "error-rate"}],
        }
    )
    settings = asyncio.run(runner.settings("shop", analysis))
    assert secrets.read_names == [("shop", "prom-auth")]
    assert settings.address == "https://prom.example:9091"
    assert settings.bearer_token == "s3cret" and settings.timeout_s == 2.0
    assert settings.ca_file is not None
    assert Path(settings.ca_file).read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_without_an_address_the_operator_default_is_used():
    runner = GateRunner(FakeSecrets({}), "http://default:9090")  # type: ignore[arg-type]
    analysis = Analysis.model_validate({"gates": [{"name": "e", "template": "error-rate"}]})
    settings = asyncio.run(runner.settings("shop", analysis))
    assert settings.address == "http://default:9090" and settings.bearer_token is None
