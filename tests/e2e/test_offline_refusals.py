"""Mistakes knowable before any traffic moves are refused before any traffic moves: by the
API server (CEL with the field named), by `segue lint` (the same field), and, for what only
gate resolution catches, by the real operator before step 0 (Failed, field named)."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.support import Rollouts, apply, shop_pair, wait_until

pytestmark = pytest.mark.e2e

GATE = {"name": "errors", "template": "error-rate", "labels": {"app": "shop"}}


def rollout(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "segue.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "legacy": {"deployment": "shop-v1"},
            "new": {"deployment": "shop-v2"},
            "traffic": {
                "gatewayAPI": {
                    "httpRoute": "shop",
                    "legacyBackend": "shop-v1",
                    "newBackend": "shop-v2",
                }
            },
            "steps": [{"setWeight": 10}, {"approval": {}}, {"setWeight": 50}],
            **spec,
        },
    }


def _with(change: Any) -> dict[str, Any]:
    doc = rollout("shop", analysis={"gates": [copy.deepcopy(GATE)]})
    change(doc["spec"])
    return doc


# (id, change to a valid manifest, field the API server names, what lint prints after it)
MISTAKES = [
    (
        "same-backends",
        lambda s: s["traffic"]["gatewayAPI"].update(newBackend="shop-v1"),
        "spec.traffic.gatewayAPI.newBackend",
        "must differ from legacyBackend",
    ),
    (
        "unknown-label",
        lambda s: s["analysis"]["gates"][0]["labels"].update(colour="blue"),
        "spec.analysis.gates[0].labels",
        "unknown template label colour",
    ),
    (
        "metric-not-a-name",
        lambda s: s["analysis"]["gates"][0]["labels"].update(metric="up or vector(1)"),
        "spec.analysis.gates[0].labels[metric]",
        "'up or vector(1)' is not a metric name",
    ),
    (
        "timeout-0s",
        lambda s: s["analysis"].update(prometheus={"timeout": "0s"}),
        "spec.analysis.prometheus.timeout",
        "must be between 100ms and 30s, got 0s",
    ),
]
LINT_FIELDS = {
    "same-backends": "spec.traffic.gatewayAPI.newBackend",
    "unknown-label": "spec.analysis.gates[0].labels.colour",
    "metric-not-a-name": "spec.analysis.gates[0].labels.metric",
    "timeout-0s": "spec.analysis.prometheus.timeout",
}


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segue.cli.main", "lint", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("case", "change", "field", "lint_says"), MISTAKES, ids=[m[0] for m in MISTAKES]
)
def test_offline_mistakes_are_refused_by_apply_and_by_lint(
    kube, namespace, crds, tmp_path, case, change, field, lint_says
):
    doc = _with(change)
    path = tmp_path / f"{case}.yaml"
    path.write_text(yaml.safe_dump(doc))
    applied = kube.kubectl("apply", "-n", namespace, "-f", str(path), check=False)
    assert applied.returncode != 0, applied.stdout
    assert f"{field}: Invalid value" in applied.stderr, applied.stderr
    print(f"kubectl apply ({case}): {applied.stderr.strip()}")

    linted = lint(path)
    assert linted.returncode == 1, linted.stdout
    assert f"{path}:0: {LINT_FIELDS[case]}: " in linted.stdout, linted.stdout
    assert lint_says in linted.stdout, linted.stdout
    print(f"segue lint ({case}): {linted.stdout.strip()}")


def test_the_valid_manifest_is_accepted_by_both(kube, namespace, crds, tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(_with(lambda s: None)))
    assert lint(path).returncode == 0
    kube.kubectl("apply", "-n", namespace, "--dry-run=server", "-f", str(path))


UNRESOLVABLE = {"name": "tenant", "query": 'sum(up{tenant="{{ tenant }}"})', "max": 1}
UNRESOLVABLE_FIELD = "spec.analysis.gates[0].query: unknown placeholder {{ tenant }}"


def _failed_with(rollouts: Rollouts, name: str, field: str) -> dict[str, Any]:
    return wait_until(
        "Failed naming the field",
        lambda: rollouts.status(name),
        lambda s: s.get("phase") == "Failed" and field in (s.get("message") or ""),
        60,
    )


def test_a_gate_that_cannot_resolve_never_moves_traffic(kube, namespace, crds, operator, tmp_path):
    rollouts = shop_pair(kube, namespace)
    doc = rollout("shop", analysis={"gates": [UNRESOLVABLE]})
    path = tmp_path / "unresolvable.yaml"
    path.write_text(yaml.safe_dump(doc))
    # CEL cannot know the placeholders; the API server accepts it, lint does not.
    linted = lint(path)
    assert linted.returncode == 1 and UNRESOLVABLE_FIELD in linted.stdout, linted.stdout
    before = rollouts.route_weights("shop")
    apply(kube, namespace, doc)
    status = _failed_with(rollouts, "shop", UNRESOLVABLE_FIELD)
    print(f"status.message: {status['message']}")
    assert rollouts.route_weights("shop") == before
    assert status.get("weight", 0) == 0 and not status.get("targetWeight")
    # Events are posted from a queue, a moment after the status that they describe.
    events = wait_until(
        "the Failed Event",
        lambda: rollouts.events("shop"),
        lambda evs: any(r == "Failed" for _, r, _ in evs),
        30,
    )
    failed = [(t, m) for t, r, m in events if r == "Failed"]
    assert failed and failed[0][0] == "Warning" and UNRESOLVABLE_FIELD in failed[0][1], events
    print(f"Event: {failed[0]}")
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "False" and UNRESOLVABLE_FIELD in ready["message"]
    time.sleep(2)
    assert rollouts.route_weights("shop") == before
    assert not [h for h in rollouts.status("shop").get("history", []) if h["event"] == "WeightSet"]


def _mentions(text: str, found: list[tuple[str, str]]) -> bool:
    return any(text in m for _, m in found)


def test_non_ascii_approval_is_ignored_and_a_midway_edit_into_a_bad_gate_stops(
    kube, namespace, crds, operator
):
    rollouts = shop_pair(kube, namespace)
    apply(kube, namespace, rollout("shop"))
    status = wait_until(
        "AwaitingApproval at 10%",
        lambda: rollouts.status("shop"),
        lambda s: s.get("phase") == "AwaitingApproval" and s.get("weight") == 10,
        60,
    )
    assert status["step"] == 1
    for value in ("\u0661", "1_0"):  # Arabic-Indic one; int() reads "1_0" as 10
        rollouts.annotate("shop", {"segue.dev/approve": value})
        ignored = wait_until(
            f"approve={value!r} ignored",
            lambda: [(t, m) for t, r, m in rollouts.events("shop") if r == "AnnotationIgnored"],
            partial(_mentions, repr(value)),
            30,
        )
        warning = next((t, m) for t, m in ignored if repr(value) in m)
        assert warning[0] == "Warning" and "1 to 3 ASCII digits" in warning[1], warning
        print(f"Event: {warning}")
        wait_until(
            "the annotation removed",
            lambda: rollouts.get("shop")["metadata"].get("annotations") or {},
            lambda a: "segue.dev/approve" not in a,
            30,
        )
        status = rollouts.status("shop")
        assert (status["phase"], status["step"]) == ("AwaitingApproval", 1)
        assert status.get("approvedStep") is None and rollouts.new_weight("shop") == 10
    history = [h for h in status["history"] if h["event"] == "AnnotationIgnored"]
    assert len(history) == 2

    # Mid-way, the spec is edited into a gate no round could run: Failed at once, and a
    # valid approval then moves nothing.
    doc = rollout("shop", analysis={"gates": [UNRESOLVABLE]})
    apply(kube, namespace, doc)
    _failed_with(rollouts, "shop", UNRESOLVABLE_FIELD)
    rollouts.annotate("shop", {"segue.dev/approve": "1"})
    time.sleep(3)
    status = rollouts.status("shop")
    assert status["phase"] == "Failed" and rollouts.new_weight("shop") == 10
    assert status.get("approvedStep") is None
