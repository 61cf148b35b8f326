"""The Grafana dashboard: valid JSON, and PromQL that asks only for metrics the operator
exports (checked against a real registry; parsed and evaluated by promtool when present)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from segue.api import PHASES, RolloutStatus
from segue.controller.metrics import VERDICTS, OperatorMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "charts/segue/dashboards/segue.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
PER_ROLLOUT = ("segue_rollout_", "segue_gate_", "segue_rollbacks_")

# What a PromQL identifier can be besides a metric name.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
    | {"and", "or", "unless", "offset", "inf", "nan"}
)
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once strings, label
    matchers, ranges, grouping clauses, numbers and function calls are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b\d+(\.\d+)?\b", " ", text)
    names = set()
    for m in _IDENT.finditer(text):
        if text[m.end() :].lstrip().startswith("("):
            continue  # a function
        if m.group() not in _KEYWORDS:
            names.add(m.group())
    return names


def exported() -> set[str]:
    """Every sample name the operator's registry exposes once each metric has a series."""
    m = OperatorMetrics()
    gates = [{"name": "errors", "value": 0.1, "legacyValue": 0.1, "verdict": "Pass"}]
    m.observe(
        "shop", "checkout", RolloutStatus.model_validate({"phase": "Pending", "gates": gates})
    )
    m.rollback("shop", "checkout", "gate")
    return {s.name for family in m.registry.collect() for s in family.samples}


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y", z=~"$v"}[5m]))) '
        "/ on (job) group_left () b * 2 or c offset 5m unless d == bool 1"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "d"}


def test_dashboard_parses_and_is_importable() -> None:
    d = load()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert {"DS_PROMETHEUS", "namespace", "rollout"} <= set(variables)
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    ids = [p["id"] for p in panels(d["panels"])]
    assert len(ids) == len(set(ids))
    for p in panels(d["panels"]):
        if p["type"] != "row":
            assert p["datasource"] == DATASOURCE, p["title"]
            assert all(t["datasource"] == DATASOURCE for t in p["targets"]), p["title"]


def test_panels_cover_what_operators_look_at() -> None:
    queries = "\n".join(exprs(load()))
    for needed in (
        "segue_rollout_phase",
        "segue_rollout_weight",
        "segue_rollout_step",
        "segue_gate_value",
        "segue_rollbacks_total",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "segue_notifications_dropped_total",
        "segue_notifications_failed_total",
    ):
        assert needed in queries


def test_queries_use_only_exported_metrics() -> None:
    d = load()
    known = exported()
    used: set[str] = set()
    for expr in exprs(d):
        names = metric_names(expr)
        assert names, expr
        assert names <= known, f"unknown metrics {names - known} in {expr}"
        used |= names
        if any(n.startswith(PER_ROLLOUT) for n in names):
            # Per-Rollout panels follow the namespace and rollout variables.
            assert 'namespace=~"$namespace"' in expr and 'rollout=~"$rollout"' in expr, expr
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            assert inner is not None, query
            assert metric_names(inner.group(1)) <= known


def _concrete(expr: str) -> str:
    # Grafana's variables, as Grafana would fill them in.
    return (
        expr.replace("$__rate_interval", "1m")
        .replace('"$namespace"', '".*"')
        .replace('"$rollout"', '".*"')
    )


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
def test_promtool_parses_every_query(tmp_path: Path) -> None:
    rules = [
        {"record": f"segue:dashboard_query_{i}", "expr": _concrete(e)}
        for i, e in enumerate(exprs(load()))
    ]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
def test_promtool_phase_and_verdict_timelines_give_state_codes(tmp_path: Path) -> None:
    """The state timelines turn the state sets into one code per series; check the codes
    against the panels' value mappings."""
    d = load()
    by_title = {p["title"]: p for p in panels(d["panels"])}
    tests = []
    for title, metric, label, labels, active, all_states in (
        ("Phase", "segue_rollout_phase", "phase", "", "RollingBack", PHASES),
        ("Gate verdicts", "segue_gate_verdict", "verdict", ', gate="errors"', "Fail", VERDICTS),
    ):
        panel = by_title[title]
        mapping = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
        code = next(k for k, v in mapping.items() if v["text"] == active)
        states = [v["text"] for k, v in mapping.items() if k != "0"]
        assert sorted(states) == sorted(all_states), title
        series = [
            {
                "series": f'{metric}{{namespace="shop", rollout="checkout"{labels}, '
                f'{label}="{state}"}}',
                "values": "1x5" if state == active else "0x5",
            }
            for state in states
        ]
        out = {"namespace": "shop", "rollout": "checkout"}
        if labels:
            out["gate"] = "errors"
        tests.append(
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": _concrete(panel["targets"][0]["expr"]),
                        "eval_time": "2m",
                        "exp_samples": [
                            {
                                "labels": "{"
                                + ", ".join(f'{k}="{v}"' for k, v in out.items())
                                + "}",
                                "value": float(code),
                            }
                        ],
                    }
                ],
            }
        )
    assert PROMTOOL is not None
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [], "tests": tests}))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
