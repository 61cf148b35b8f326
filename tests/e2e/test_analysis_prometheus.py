"""The Prometheus provider and query escaping against a real Prometheus."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
import requests

from segue.analysis.errors import ProviderUnavailable, QueryRejected, UnusableResult
from segue.analysis.providers.prometheus.client import PrometheusClient, PrometheusSettings
from segue.analysis.providers.prometheus.templating import escape_string_literal

pytestmark = pytest.mark.e2e


@pytest.fixture
def provider(prometheus: Any) -> Iterator[PrometheusClient]:
    p = PrometheusClient(PrometheusSettings(address=prometheus.url, timeout_s=5))
    yield p
    p.close()


@pytest.fixture
def self_scrape(prometheus: Any) -> Iterator[str]:
    """Prometheus scraping itself under a job of its own: a real series with a known value."""
    job = f"self-{uuid.uuid4().hex[:8]}"
    prometheus.add_scrape_target(job, urlparse(prometheus.url).netloc)
    yield job
    prometheus.remove_scrape_target(job)


def test_real_value(provider, self_scrape):
    assert provider.query_scalar(f'sum(up{{job="{self_scrape}"}})') == 1.0
    # A freshly started Prometheus may record `up` a scrape before the scraped series.
    query = f'sum(prometheus_tsdb_head_samples_appended_total{{job="{self_scrape}"}})'
    deadline = time.monotonic() + 15
    samples = provider.query_scalar(query)
    while samples is None and time.monotonic() < deadline:
        time.sleep(0.5)
        samples = provider.query_scalar(query)
    assert samples is not None and samples > 0


def test_scalar_value(provider):
    assert provider.query_scalar("scalar(vector(0.25))") == 0.25


def test_no_data_is_none(provider):
    assert provider.query_scalar('sum(http_requests_total{app="no-such-app-anywhere"})') is None
    assert provider.query_scalar("vector(0) / 0") is None  # NaN
    assert provider.query_scalar("vector(1) / 0") is None  # +Inf


def test_bad_query_is_rejected(provider):
    with pytest.raises(QueryRejected) as e:
        provider.query_scalar('sum(rate(http_requests_total{app="x"[1m]))')
    assert "parse error" in e.value.detail


def test_several_series_must_be_aggregated(provider):
    two = 'label_replace(vector(1), "a", "1", "", "") or label_replace(vector(2), "a", "2", "", "")'
    with pytest.raises(UnusableResult, match="query returns 2 series; aggregate it"):
        provider.query_scalar(two)


def test_unreachable_address_fails_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = PrometheusClient(PrometheusSettings(address=f"http://127.0.0.1:{port}", timeout_s=1))
    start = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="cannot connect"):
        p.query_scalar("vector(1)")
    assert time.monotonic() - start < 3


def test_silent_address_fails_within_the_timeout():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)  # accepts connections, never answers
        settings = PrometheusSettings(address=f"http://127.0.0.1:{s.getsockname()[1]}", timeout_s=1)
        p = PrometheusClient(settings)
        start = time.monotonic()
        with pytest.raises(ProviderUnavailable, match="did not answer within 1s"):
            p.query_scalar("vector(1)")
        assert time.monotonic() - start < 3


@pytest.mark.parametrize(
    "value",
    [
        'a"b',
        "a'b",
        "a\\b",
        '\\"',
        "\\x22",
        '"} or vector(1) #',
        "é ü 日本 🚀",
        "\\\\'\"`",
    ],
)
@pytest.mark.parametrize("quote", ['"', "'"])
def test_escaped_values_parse_back_identically(prometheus, value, quote):
    """Prometheus' own parser reads each escaped value back as exactly the value."""
    literal = f"{quote}{escape_string_literal(value)}{quote}"
    query = f'label_replace(vector(1), "x", {literal}, "", "")'
    body = requests.get(f"{prometheus.url}/api/v1/query", params={"query": query}, timeout=5)
    assert body.status_code == 200, body.text
    (series,) = body.json()["data"]["result"]
    assert series["metric"]["x"] == value
