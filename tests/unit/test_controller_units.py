"""Pieces of the controller that need no cluster: merge patches and the Prometheus
credentials taken from a Rollout's Secret."""

from __future__ import annotations

import asyncio
from pathlib import Path

from segue.analysis.providers.prometheus.runtime import PrometheusConnection, PrometheusRuntime
from segue.api.spec import Analysis
from segue.controller.gates import GateRunner
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
    runner = GateRunner(
        secrets,  # type: ignore[arg-type]
        [PrometheusRuntime("http://default:9090", ["https://prom.example:9091"])],
    )
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
    connection = asyncio.run(runner.connect("shop", analysis))
    assert isinstance(connection, PrometheusConnection)
    settings = connection.settings
    assert secrets.read_names == [("shop", "prom-auth")]
    assert settings.address == "https://prom.example:9091"
    assert settings.bearer_token == "s3cret" and settings.timeout_s == 2.0
    assert settings.ca_file is not None
    assert Path(settings.ca_file).read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_without_an_address_the_operator_default_is_used():
    runner = GateRunner(FakeSecrets({}), [PrometheusRuntime("http://default:9090")])  # type: ignore[arg-type]
    analysis = Analysis.model_validate({"gates": [{"name": "e", "template": "error-rate"}]})
    connection = asyncio.run(runner.connect("shop", analysis))
    assert isinstance(connection, PrometheusConnection)
    settings = connection.settings
    assert settings.address == "http://default:9090" and settings.bearer_token is None
