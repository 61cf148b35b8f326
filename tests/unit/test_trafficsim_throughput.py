"""The traffic simulator's throughput knob: a version completes only a fraction of the
requests routed to it, and the rest are not counted at all."""

from __future__ import annotations

from collections import Counter

import pytest

from segue_testkit.trafficsim.cli import main
from segue_testkit.trafficsim.config import Behaviour, SimConfig
from segue_testkit.trafficsim.sources import Split
from segue_testkit.trafficsim.synthesizer import Synthesizer


def completed(
    synth: Synthesizer, split: Split, config: SimConfig, seconds: float = 10, dt: float = 0.1
) -> tuple[Counter[tuple[str | None, str]], Counter[str]]:
    """Requests per (customer, version) and errors per version over ``seconds`` of ticks."""
    requests: Counter[tuple[str | None, str]] = Counter()
    errors: Counter[str] = Counter()
    for _ in range(round(seconds / dt)):
        for b in synth.step(dt, split, config):
            requests[(b.customer, b.version)] += b.requests
            errors[b.version] += b.errors
            assert len(b.latencies_s) == b.requests
    return requests, errors


def test_a_version_completes_only_its_throughput_share():
    config = SimConfig(rate=200, new=Behaviour(throughput=0.5))
    requests, _ = completed(Synthesizer(), Split(50.0), config)
    # 100 rps routed to each; new completes half of its share, legacy all of it.
    assert abs(requests[(None, "new")] - 500) <= 1
    assert abs(requests[(None, "legacy")] - 1000) <= 1


def test_errors_are_a_share_of_the_completed_requests():
    config = SimConfig(rate=200, new=Behaviour(error_rate=0.2, throughput=0.25))
    requests, errors = completed(Synthesizer(), Split(100.0), config)
    assert abs(requests[(None, "new")] - 500) <= 1
    assert abs(errors["new"] - 100) <= 1


def test_zero_throughput_counts_nothing_so_the_version_has_no_series():
    config = SimConfig(rate=200, legacy=Behaviour(throughput=0.0))
    requests, _ = completed(Synthesizer(), Split(30.0), config)
    assert (None, "legacy") not in requests
    assert abs(requests[(None, "new")] - 600) <= 1


@pytest.mark.parametrize("throughput", [0.1, 0.33, 0.9, 1.0])
def test_throughput_scales_the_completed_rate_exactly(throughput: float):
    config = SimConfig(rate=150, new=Behaviour(throughput=throughput))
    requests, _ = completed(Synthesizer(), Split(100.0), config, seconds=20)
    assert abs(requests[(None, "new")] - 150 * 20 * throughput) <= 1


def test_throughput_applies_per_customer_and_to_the_segment():
    config = SimConfig(rate=200, new=Behaviour(throughput=0.5))
    synth = Synthesizer(customers=("acme", "globex"))
    requests, _ = completed(synth, Split(0.0, frozenset({"acme"})), config)
    # 100 rps per customer: acme's all go to new, which completes half of them.
    assert abs(requests[("acme", "new")] - 500) <= 1
    assert abs(requests[("globex", "legacy")] - 1000) <= 1


def test_an_out_of_range_throughput_flag_is_refused(capsys: pytest.CaptureFixture[str]):
    code = main(
        ["--app", "a", "--legacy-version", "v1", "--new-version", "v2",
         "--static-weight", "10", "--new-throughput", "1.5"]
    )  # fmt: skip
    assert code == 2
    assert "new.throughput must be between 0 and 1, got 1.5" in capsys.readouterr().err
