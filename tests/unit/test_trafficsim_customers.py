"""The traffic simulator with customers: requests spread evenly over customer ids, a split's
segment pinned to the new version whatever the weight, and a customer label on the metrics."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segue_testkit.trafficsim.cli import MAX_CUSTOMERS, customer_ids, parse_args
from segue_testkit.trafficsim.config import Behaviour, SimConfig
from segue_testkit.trafficsim.metrics import Metrics
from segue_testkit.trafficsim.simulator import Simulator
from segue_testkit.trafficsim.sources import Split
from segue_testkit.trafficsim.synthesizer import Batch, Synthesizer

CUSTOMERS = ("acme", "globex", "initech")


def requests_by(
    synth: Synthesizer, split: Split, config: SimConfig, seconds: float = 10, dt: float = 0.1
) -> Counter[tuple[str | None, str]]:
    """Requests per (customer, version) over ``seconds`` of ticks."""
    counts: Counter[tuple[str | None, str]] = Counter()
    for _ in range(round(seconds / dt)):
        for b in synth.step(dt, split, config):
            counts[(b.customer, b.version)] += b.requests
    return counts


def test_the_rate_is_spread_evenly_over_customers_and_each_splits_by_weight():
    counts = requests_by(Synthesizer(customers=CUSTOMERS), Split(20.0), SimConfig(rate=300))
    for customer in CUSTOMERS:
        # 100 rps each over 10 s: 20 % to new, 80 % to legacy.
        assert abs(counts[(customer, "new")] - 200) <= 1
        assert abs(counts[(customer, "legacy")] - 800) <= 1
    assert (None, "new") not in counts


def test_segment_customers_go_to_new_whatever_the_weight():
    counts = requests_by(
        Synthesizer(customers=CUSTOMERS), Split(0.0, frozenset({"globex"})), SimConfig(rate=300)
    )
    assert abs(counts[("globex", "new")] - 1000) <= 1
    assert counts[("globex", "legacy")] == 0
    for customer in ("acme", "initech"):
        assert abs(counts[(customer, "legacy")] - 1000) <= 1
        assert counts[(customer, "new")] == 0


def test_segment_customers_stay_on_new_at_full_legacy_weight_and_without_weight():
    synth = Synthesizer(customers=CUSTOMERS)
    split = Split(None, frozenset({"acme", "initech"}))
    counts = requests_by(synth, split, SimConfig(rate=300))
    assert abs(counts[("acme", "new")] - 1000) <= 1
    assert abs(counts[("initech", "new")] - 1000) <= 1
    # No weight: the customers outside the segment send nothing at all.
    assert counts[("globex", "new")] == counts[("globex", "legacy")] == 0


def test_segment_errors_follow_the_new_versions_behaviour():
    config = SimConfig(rate=200, new=Behaviour(error_rate=0.5))
    synth = Synthesizer(customers=("acme", "globex"))
    errors: Counter[str | None] = Counter()
    for _ in range(100):
        for b in synth.step(0.1, Split(0.0, frozenset({"acme"})), config):
            errors[b.customer] += b.errors
    assert abs(errors["acme"] - 500) <= 1
    assert errors["globex"] == 0


def test_unknown_segment_ids_and_a_segment_without_customers_change_nothing():
    config = SimConfig(rate=300)
    plain = requests_by(Synthesizer(customers=CUSTOMERS), Split(20.0), config)
    unknown = requests_by(
        Synthesizer(customers=CUSTOMERS), Split(20.0, frozenset({"umbrella"})), config
    )
    assert plain == unknown
    without = requests_by(Synthesizer(), Split(25.0, frozenset({"acme"})), config)
    assert abs(without[(None, "new")] - 750) <= 1
    assert abs(without[(None, "legacy")] - 2250) <= 1


@given(
    n_customers=st.integers(1, 8),
    weight=st.one_of(st.none(), st.floats(0, 100)),
    pinned=st.sets(st.integers(0, 7)),
)
def test_every_customer_gets_its_even_share_and_segments_never_reach_legacy(
    n_customers: int, weight: float | None, pinned: set[int]
) -> None:
    customers = tuple(f"c{i}" for i in range(n_customers))
    segment = frozenset(f"c{i}" for i in pinned)
    counts = requests_by(
        Synthesizer(customers=customers), Split(weight, segment), SimConfig(rate=80), seconds=5
    )
    for customer in customers:
        total = counts[(customer, "legacy")] + counts[(customer, "new")]
        if customer in segment:
            assert counts[(customer, "legacy")] == 0
            assert abs(total - 400 / n_customers) <= 1
        elif weight is None:
            assert total == 0
        else:
            # Each version's count is exact to within one request.
            assert abs(total - 400 / n_customers) <= 2


def test_metrics_carry_a_customer_label_only_with_customers():
    labelled = Metrics("checkout", {"legacy": "v1", "new": "v2"}, by_customer=True)
    labelled.record(Batch("new", 4, 1, (0.05,) * 4, customer="acme"))
    text = labelled.exposition().decode()
    assert 'http_requests_total{app="checkout",code="200",customer="acme",version="v2"} 3.0' in (
        text
    )
    assert 'http_requests_total{app="checkout",code="500",customer="acme",version="v2"} 1.0' in (
        text
    )
    assert (
        'http_request_duration_seconds_count{app="checkout",customer="acme",version="v2"} 4.0'
        in text
    )
    plain = Metrics("checkout", {"legacy": "v1", "new": "v2"})
    plain.record(Batch("new", 4, 1, (0.05,) * 4))
    assert "customer" not in plain.exposition().decode()


class PinnedSource:
    """A source whose split a test sets directly."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def describe(self) -> str:
        return "pinned"

    def read(self) -> Split:
        return self.split


def test_the_simulator_reports_the_segment_and_its_customers():
    source = PinnedSource(Split(10.0))
    sim = Simulator(
        source,
        Metrics("a", {"legacy": "v1", "new": "v2"}, by_customer=True),
        SimConfig(),
        customers=CUSTOMERS,
    )
    sim.refresh_weight()
    snapshot = sim.snapshot()
    assert snapshot["weight"] == 10.0 and snapshot["segment"] == []
    assert snapshot["customers"] == list(CUSTOMERS)
    source.split = Split(10.0, frozenset({"initech", "acme"}))
    sim.refresh_weight()
    assert sim.snapshot()["segment"] == ["acme", "initech"]
    assert sim.weight == 10.0


def test_customer_ids_are_checked():
    assert customer_ids("acme,globex, initech") == CUSTOMERS
    for raw, message in [
        ("acme,,globex", "no empty ones"),
        ("acme,acme", "twice"),
        ("ac me", "got 'ac me'"),
        ("-acme", "got '-acme'"),
        ("x" * 64, "at most 63"),
        (",".join(f"c{i}" for i in range(MAX_CUSTOMERS + 1)), f"at most {MAX_CUSTOMERS} ids"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            customer_ids(raw)
    base = ["--app", "a", "--legacy-version", "v1", "--new-version", "v2", "--static-weight", "5"]
    assert parse_args(base).customers == ()
    assert parse_args([*base, "--customers", "acme,globex"]).customers == ("acme", "globex")
    with pytest.raises(SystemExit):
        parse_args([*base, "--customers", "acme,acme"])


def test_process_labels_requests_by_customer():
    proc = subprocess.Popen(
        [sys.executable, "-m", "segue_testkit.trafficsim", "--port", "0", "--app", "shop",
         "--legacy-version", "v1", "--new-version", "v2", "--static-weight", "50",
         "--customers", "acme,globex"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        base = f"http://{proc.stdout.readline().strip().removeprefix('listening on ')}"
        with urllib.request.urlopen(f"{base}/config", timeout=5) as r:
            config = json.load(r)
        assert config["customers"] == ["acme", "globex"] and config["segment"] == []
        wanted = [
            f'http_requests_total{{app="shop",code="200",customer="{c}",version="{v}"}}'
            for c in ("acme", "globex")
            for v in ("v1", "v2")
        ]
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
                text = r.read().decode()
            if all(w in text for w in wanted):
                break
            time.sleep(0.1)
        assert all(w in text for w in wanted), text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
