"""The running half of a metric provider, as the operator's shell uses it.

A provider's ``runtime`` module (named in its catalog entry) holds ``RUNTIME``, an object
with this shape: it adds its operator flags, says whether a Rollout's own section may be
used, turns a section (a Rollout's, a MetricProvider's, or none for the default) and its
credentials into a :class:`Connection`, and a connection runs a round. The shell
(``controller/gates.py``) asks ``registry`` for runtimes and never names a provider.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from segue.analysis.providers.base import Provider, RoundContext
from segue.api.base import SpecModel
from segue.api.spec import Gate
from segue.engine.types import GateRound


class ProviderNotUsable(Exception):
    """A provider section cannot be used (an address the operator does not allow, a
    MetricProvider missing or invalid); the message names the field and is safe to show."""


class SecretReader(Protocol):
    """Reads a Secret's data (the controller's cached reader)."""

    async def read(self, namespace: str, name: str) -> Mapping[str, str]: ...


class Connection(Protocol):
    """Where and how one Rollout's round goes: address, credentials, timeout."""

    async def evaluate(
        self, gates: Sequence[Gate], context: RoundContext, now: datetime
    ) -> GateRound:
        """Every gate evaluated once: the API's ``GateStatus`` for each, in order, or a
        round with ``error`` set when the provider could not be reached."""
        ...


class ProviderRuntime(Protocol):
    """A metric provider in the operator."""

    @property
    def provider(self) -> Provider:
        """Its catalog entry."""
        ...

    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        """Add its operator flags (each with its environment variable)."""
        ...

    def configured(self, args: argparse.Namespace) -> ProviderRuntime:
        """This runtime with the operator's flags applied."""
        ...

    def describe(self) -> list[str]:
        """What the operator logs about it at start (addresses Rollouts may name, ...)."""
        ...

    def refusal(self, section: SpecModel) -> str | None:
        """Why a Rollout's own section (``spec.analysis.<key>``) may not be used, naming the
        field and the fix; None when it may. Checked before every pass, so a refused
        Rollout never moves traffic."""
        ...

    async def connect(
        self, section: SpecModel | None, namespace: str, secrets: SecretReader
    ) -> Connection:
        """A connection for a Rollout in ``namespace``: from its own section, from a
        MetricProvider's section, or (None) from the operator's defaults. Reads the
        credentials the section names; raises :class:`ProviderNotUsable` for a section it
        may not use, and whatever ``secrets`` raises."""
        ...
