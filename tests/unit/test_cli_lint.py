from __future__ import annotations

import io
from pathlib import Path

import pytest

from segue.cli import lint
from segue.cli.main import main

FIXTURES = Path(__file__).parent / "fixtures" / "cli_lint"
GOOD = str(FIXTURES / "good.yaml")
BROKEN = str(FIXTURES / "broken.yaml")
SYNTAX = str(FIXTURES / "syntax.yaml")

ROLLOUT = """\
apiVersion: segue.dev/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  legacy: {deployment: web-v1}
  new: {deployment: web-v2}
  traffic: {replicas: {}}
"""


def _run(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["lint", *args])
    return code, capsys.readouterr().out.splitlines()


def test_good_manifests(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(GOOD, capsys=capsys)
    assert code == 0
    assert out == ["2 Rollouts OK (3 documents in 1 file)"]


def test_every_broken_field_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(BROKEN, capsys=capsys)
    assert code == 1
    prefix = f"{BROKEN}:"
    expected = {
        "0: spec.traffic.gatewayAPI.newBackend: required field missing (line 8)",
        "0: spec.steps[1].pause.duration: invalid duration '10x'",
        "0: spec.steps[2].setWeight: Input should be less than or equal to 100 (got 500) (line 12)",
        "0: spec.steps[3]: each step must have exactly one of setWeight, setSegment, pause or "
        "approval",
        "0: spec.analysis.gates[0]: a gate with a query needs a bound",
        "0: spec.rollbak: unknown field",
        "1: metadata.name: required field missing",
        "1: spec.risk: Input should be 'low', 'medium' or 'critical' (got 'extreme')",
        "2: apiVersion: unknown version segue.dev/v1beta1 (use segue.dev/v1alpha1) (line 29)",
        "3: kind: unknown kind 'Canary' in segue.dev/v1alpha1"
        " (known: Rollout, MetricProvider, Migration)",
    }
    for text in expected:
        assert any(line.startswith(prefix + text) for line in out), (text, out)
    assert len(out) == len(expected) + 1
    assert out[-1] == "10 problems found (2 Rollouts in 1 file)"


def test_yaml_syntax_error_has_file_and_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(SYNTAX, capsys=capsys)
    assert code == 1
    assert out[0] == (
        f"{SYNTAX}:1: YAML syntax error: mapping values are not allowed here (line 14, column 13)"
    )


def test_model_rules_are_reported_on_spec(tmp_path: Path) -> None:
    path = tmp_path / "same.yaml"
    path.write_text(ROLLOUT.replace("web-v2", "web-v1") + "  risk: low\n")
    report = lint.lint_paths([str(path)])
    assert [str(p) for p in report.problems] == [
        f"{path}:0: spec: spec.new.deployment must differ from spec.legacy.deployment (line 5)"
    ]
    path.write_text(ROLLOUT)
    assert [str(p) for p in lint.lint_paths([str(path)]).problems] == [
        f"{path}:0: spec: set risk (low, medium or critical) or steps (line 5)"
    ]


def test_types_are_checked_as_strictly_as_the_api_server(tmp_path: Path) -> None:
    # YAML reads 1.10 as the float 1.1 and "5" stays a string; the CRD rejects both.
    path = tmp_path / "types.yaml"
    text = ROLLOUT.replace("web-v2}", "web-v2, version: 1.10}") + "  steps: [{setWeight: '5'}]\n"
    path.write_text(text)
    problems = [str(p) for p in lint.lint_paths([str(path)]).problems]
    assert problems == [
        f"{path}:0: spec.new.version: Input should be a valid string (got 1.1) (line 6)",
        f"{path}:0: spec.steps[0].setWeight: Input should be a valid integer (got '5') (line 8)",
    ]


def test_bad_names_get_a_readable_hint(tmp_path: Path) -> None:
    path = tmp_path / "names.yaml"
    path.write_text(ROLLOUT.replace("name: web", "name: Web_1").replace("web-v1", "Web_v1"))
    problems = [str(p) for p in lint.lint_paths([str(path)]).problems]
    assert f"{path}:0: metadata.name: must be a DNS-1123 name" in problems[0]
    assert "spec.legacy.deployment: must be a DNS-1123 name" in problems[1]
    assert "(got 'Web_v1')" in problems[1]


def test_directories_recurse_and_skip_other_objects(tmp_path: Path) -> None:
    (tmp_path / "apps" / "web").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / "apps" / "web" / "rollout.yml").write_text(ROLLOUT + "  risk: low\n")
    (tmp_path / "apps" / "web" / "argo.yaml").write_text(
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: x}\nspec: {}\n"
    )
    (tmp_path / "apps" / "notes.txt").write_text("not: [yaml")
    (tmp_path / ".git" / "broken.yaml").write_text("kind: [")
    (tmp_path / "values.yaml").write_text("---\n---\nreplicas: 3\n---\n- a list\n")
    report = lint.lint_paths([str(tmp_path)])
    assert report.ok, report.problems
    assert (report.files, report.rollouts) == (3, 1)
    assert report.summary() == "1 Rollout OK (5 documents in 3 files)"


def test_stdin(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    code = lint.run(["-"], out, stdin=io.StringIO(ROLLOUT + "  risk: medium\n"))
    assert code == 0
    assert out.getvalue() == "1 Rollout OK (1 documents in 1 file)\n"
    out = io.StringIO()
    assert lint.run(["-"], out, stdin=io.StringIO(ROLLOUT)) == 1
    assert out.getvalue().startswith("<stdin>:0: spec: set risk")


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run("does-not-exist.yaml", GOOD, capsys=capsys)
    assert code == 1
    assert out[0] == "does-not-exist.yaml: no such file or directory"


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        ((), "spec"),
        (("steps", 2, "setWeight"), "spec.steps[2].setWeight"),
        (("analysis", "gates", 0, "labels", "app.kubernetes.io/name"),
         "spec.analysis.gates[0].labels['app.kubernetes.io/name']"),
    ],
)  # fmt: skip
def test_field_path(loc: tuple[int | str, ...], path: str) -> None:
    assert lint.field_path(loc) == path


GATE = "    gates: [{name: errors, template: error-rate}]\n"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "  risk: low\n  hold: 99999999999h\n",
            "spec.hold: must be between 1ms and 720h (30 days), got 99999999999h (line 9)",
        ),
        (
            "  risk: low\n  analysis:\n    interval: 0s\n" + GATE,
            "spec.analysis.interval: must be between 1s and 1h, got 0s (line 10)",
        ),
        (
            "  risk: low\n  analysis:\n    prometheus: {timeout: 0s}\n" + GATE,
            "spec.analysis.prometheus.timeout: must be between 100ms and 30s, got 0s (line 10)",
        ),
        (
            "  risk: low\n  analysis:\n    unreachableLimit: 25h\n" + GATE,
            "spec.analysis.unreachableLimit: must be between 0s and 24h, got 25h (line 10)",
        ),
        (
            "  risk: low\n  rollback: {mode: graceful, duration: 500ms}\n",
            "spec.rollback.duration: must be between 1s and 24h, got 500ms (line 9)",
        ),
        (
            "  steps: [{setWeight: 10}, {pause: {duration: 721h}}]\n",
            "spec.steps[1].pause.duration: must be between 1ms and 720h (30 days), got 721h "
            "(line 8)",
        ),
    ],
)
def test_durations_out_of_bounds_name_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, expected: str
) -> None:
    path = tmp_path / "bounds.yaml"
    path.write_text(ROLLOUT + extra)
    code, out = _run(str(path), capsys=capsys)
    assert code == 1
    assert out == [f"{path}:0: {expected}", "1 problem found (1 Rollouts in 1 file)"]


def test_absurd_durations_never_raise(tmp_path: Path) -> None:
    path = tmp_path / "absurd.yaml"
    texts = ["9" * 31 + "h", "9" * 30 + "ms", "1h" * 17, "0" * 31 + "1h", "9" * 4400 + "h"]
    for text in texts:
        path.write_text(ROLLOUT + f"  risk: low\n  hold: '{text}'\n")
        problems = [str(p) for p in lint.lint_paths([str(path)]).problems]
        assert len(problems) == 1 and "spec.hold: " in problems[0], (text, problems)


def test_durations_at_the_bounds_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "edges.yaml"
    path.write_text(
        ROLLOUT
        + "  risk: low\n  hold: 720h\n  rollback: {duration: 24h}\n  analysis:\n"
        + "    interval: 1s\n    unreachableLimit: 0s\n    prometheus: {timeout: 100ms}\n"
        + GATE
    )
    assert lint.lint_paths([str(path)]).ok


GATEWAY_ROLLOUT = """\
apiVersion: segue.dev/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  legacy: {deployment: web-v1}
  new: {deployment: web-v2}
  traffic: {gatewayAPI: {httpRoute: web, legacyBackend: web-v1, newBackend: web-v1}}
  risk: low
"""


def test_equal_backends_are_refused_naming_new_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "backends.yaml"
    path.write_text(GATEWAY_ROLLOUT)
    code, out = _run(str(path), capsys=capsys)
    assert code == 1
    assert out[0] == (
        f"{path}:0: spec.traffic.gatewayAPI.newBackend: must differ from legacyBackend "
        "(each version needs a backendRef of its own in the rule) (line 7)"
    )


@pytest.mark.parametrize(
    ("gate", "expected"),
    [
        (
            "{name: e, template: error-rate, labels: {colour: red}}",
            "spec.analysis.gates[0].labels.colour: unknown template label colour; known: ",
        ),
        (
            "{name: e, template: error-rate, labels: {metric: 'up or vector(1)'}}",
            "spec.analysis.gates[0].labels.metric: template label metric: 'up or vector(1)' "
            "is not a metric name (line 11)",
        ),
        (
            "{name: q, query: 'sum(up{t=\"{{ tenant }}\"})', max: 1}",
            "spec.analysis.gates[0].query: unknown placeholder {{ tenant }}; known: ",
        ),
        (
            "{name: q, query: 'sum(up)', maxRatioToLegacy: 2}",
            "spec.analysis.gates[0].query: compares with legacy but its query is the same",
        ),
    ],
)
def test_gates_are_resolved_as_the_operator_resolves_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gate: str, expected: str
) -> None:
    path = tmp_path / "gates.yaml"
    path.write_text(ROLLOUT + "  risk: low\n  analysis:\n    gates:\n    - " + gate + "\n")
    code, out = _run(str(path), capsys=capsys)
    assert code == 1
    assert out[0].startswith(f"{path}:0: {expected}"), out
    assert out[-1] == "1 problem found (1 Rollouts in 1 file)"


def test_a_rollout_name_too_long_for_a_placeholder_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "long.yaml"
    gate = "{name: q, query: 'up{r=\"{{ rollout }}\"}', max: 1}"
    text = ROLLOUT.replace("name: web", "name: " + "w" * 70)
    path.write_text(text + "  risk: low\n  analysis:\n    gates:\n    - " + gate + "\n")
    code, out = _run(str(path), capsys=capsys)
    assert code == 1
    assert out[0].startswith(f"{path}:0: metadata.name: cannot build the query for the new"), out


MIGRATION = """\
apiVersion: segue.dev/v1alpha1
kind: Migration
metadata: {name: shop-v2}
spec:
  rollbackScope: wave
  waves:
    - {name: low, rollouts: [catalog], bakeTime: 5m}
    - {name: medium, rollouts: [cart], approval: true}
"""


def test_migrations_are_linted_with_the_operator_s_model(tmp_path: Path) -> None:
    path = tmp_path / "migration.yaml"
    path.write_text(MIGRATION)
    assert lint.lint_paths([str(path)]).ok
    path.write_text(MIGRATION.replace("rollouts: [cart]", "rollouts: [cart, catalog]"))
    assert [str(p) for p in lint.lint_paths([str(path)]).problems] == [
        f"{path}:0: spec.waves: a Rollout may be named once in a Migration "
        "(it belongs to one wave) (line 7)"
    ]
    path.write_text(MIGRATION.replace("rollbackScope: wave", "rollbackScope: everything"))
    (problem,) = lint.lint_paths([str(path)]).problems
    assert problem.path == "spec.rollbackScope" and problem.line == 5
