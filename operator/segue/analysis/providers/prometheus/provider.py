"""Prometheus in the catalog of metric providers: what the API and ``segue lint`` know of
it. Pure."""

from __future__ import annotations

from typing import Final

from segue.analysis.providers.base import Provider
from segue.analysis.providers.prometheus.labels import TEMPLATE_LABEL_RULES
from segue.analysis.providers.prometheus.planning import gate_problems
from segue.analysis.providers.prometheus.settings import (
    COLUMNS,
    KEY,
    Prometheus,
    PrometheusEndpoint,
)
from segue.analysis.providers.prometheus.templates import TEMPLATE_NAMES

PROMETHEUS: Final = Provider(
    key=KEY,
    title="Prometheus",
    inline=Prometheus,
    endpoint=PrometheusEndpoint,
    columns=COLUMNS,
    templates=TEMPLATE_NAMES,
    gate_rules=TEMPLATE_LABEL_RULES,
    plan=gate_problems,
    runtime="segue.analysis.providers.prometheus.runtime",
)
