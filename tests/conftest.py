"""Shared pytest wiring: e2e tests live in tests/e2e and are marked automatically."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# hack/ holds the cluster and simulator scripts that e2e fixtures import.
sys.path.insert(0, str(ROOT / "hack"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
