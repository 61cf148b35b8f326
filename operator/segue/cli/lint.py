"""``segue lint``: offline validation of Rollout (and MetricProvider and Migration)
manifests, for editors and GitOps CI.

Every Rollout document is validated with the same pydantic model the operator uses
(:class:`segue.api.RolloutSpec`), so a manifest that lints clean is one the operator accepts.
Validation is strict about types because the API server is: ``setWeight: "5"`` passes a lax
pydantic model but not the CRD's structural schema.

Problems are printed one per line as ``FILE:DOC: FIELD: MESSAGE (line N)``; DOC counts the
YAML documents of the file from 0 (like ``yq``'s document index).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from segue import GROUP, KIND, VERSION
from segue.api import DURATION_PATTERN, RolloutSpec, parse_duration
from segue.api.base import LABEL_PATTERN, LABEL_VALUE_PATTERN, NAME_PATTERN
from segue.api.migration import MIGRATION_KIND, MigrationSpec
from segue.api.provider import PROVIDER_KIND, MetricProviderSpec
from segue.controller.resolution import unresolvable_gates

API_VERSION: Final = f"{GROUP}/{VERSION}"
SUFFIXES: Final = (".yaml", ".yml")
STDIN: Final = "-"
# A manifest without metadata.namespace is applied to the namespace of the kubectl context;
# any valid name stands in for it when gates are resolved.
LINT_NAMESPACE: Final = "default"
LINT_NAME: Final = "rollout"  # stands in for a name already reported as invalid
_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INDEX: Final = re.compile(r"\[[0-9]+\]")
_FIELD: Final = re.compile(r"spec(\.[A-Za-z]+)+")
_PATTERN_HINTS: Final = {
    NAME_PATTERN: "must be a DNS-1123 name: lowercase letters, digits, '-' and '.'",
    LABEL_PATTERN: "must be a DNS-1123 label: lowercase letters, digits and '-'",
    LABEL_VALUE_PATTERN: "must be a valid label value: letters, digits, '-', '_' and '.'",
}


@dataclass(frozen=True)
class Problem:
    source: str
    doc: int | None
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.source if self.doc is None else f"{self.source}:{self.doc}"
        field_ = f" {self.path}:" if self.path else ""
        at = f" (line {self.line})" if self.line is not None else ""
        return f"{where}:{field_} {self.message}{at}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    documents: int = 0
    rollouts: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        files = f"{self.files} file{'s' if self.files != 1 else ''}"
        if self.ok:
            noun = "Rollout" if self.rollouts == 1 else "Rollouts"
            return f"{self.rollouts} {noun} OK ({self.documents} documents in {files})"
        n = len(self.problems)
        return f"{n} problem{'s' if n != 1 else ''} found ({self.rollouts} Rollouts in {files})"


# --- field paths and messages -----------------------------------------------------------


def field_path(loc: Iterable[int | str], prefix: str = "spec") -> str:
    """``('steps', 2, 'setWeight')`` -> ``spec.steps[2].setWeight``. The loc already holds
    the camelCase aliases, since manifests are validated by alias."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:  # a map key such as a label name with a slash
            out += f"[{part!r}]"
    return out


def error_message(err: ErrorDetails) -> str:
    """Pydantic's message, reworded where a user would otherwise see a regex."""
    kind = err["type"]
    value = err.get("input")
    if kind == "missing":
        return "required field missing"
    if kind == "extra_forbidden":
        return "unknown field (a typo, or a field of another version?)"
    if kind == "value_error":
        return err["msg"].removeprefix("Value error, ")
    if kind == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern")
        if pattern == DURATION_PATTERN and isinstance(value, str):
            try:
                parse_duration(value)
            except ValueError as e:
                return str(e)
        hint = _PATTERN_HINTS.get(str(pattern))
        if hint is not None:
            return f"{hint} (got {value!r})"
    message = err["msg"]
    if isinstance(value, str | int | float | bool) and kind not in ("too_long", "too_short"):
        message += f" (got {value!r})"
    return message


def _without_path(message: str, path: str) -> str:
    """The model's messages name their field for the API server's sake ("spec.analysis.gates:
    ...", "spec.steps[*].pause.duration: ..."); next to our own path that would say it
    twice."""
    head, sep, rest = message.partition(": ")
    if sep and head.startswith("spec") and _INDEX.sub("[*]", path).startswith(head):
        return rest
    return message


def node_line(node: yaml.Node | None, loc: Iterable[int | str]) -> int | None:
    """1-based line of the deepest YAML node the path reaches (the parent of a missing
    field is where it belongs)."""
    if node is None:
        return None
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if 0 <= part < len(node.value) else None
        if child is None:
            break
        node = child
    return node.start_mark.line + 1


# --- documents --------------------------------------------------------------------------


def lint_document(source: str, index: int, data: Any, node: yaml.Node | None) -> list[Problem]:
    """Problems of one YAML document; documents that are not Segue objects have none."""
    if not isinstance(data, dict):
        return []
    api_version = data.get("apiVersion")
    kind = data.get("kind")
    if not isinstance(api_version, str) or not api_version.startswith(f"{GROUP}/"):
        return []

    def problem(loc: Sequence[int | str], message: str) -> Problem:
        return Problem(source, index, field_path(loc, ""), message, node_line(node, loc))

    if api_version != API_VERSION:
        return [problem(["apiVersion"], f"unknown version {api_version} (use {API_VERSION})")]
    models: dict[str, type[RolloutSpec] | type[MetricProviderSpec] | type[MigrationSpec]] = {
        KIND: RolloutSpec,
        PROVIDER_KIND: MetricProviderSpec,
        MIGRATION_KIND: MigrationSpec,
    }
    model = models.get(kind) if isinstance(kind, str) else None
    if model is None:
        known = ", ".join(models)
        return [problem(["kind"], f"unknown kind {kind!r} in {API_VERSION} (known: {known})")]
    problems = []
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if name is None:
        problems.append(problem(["metadata", "name"], "required field missing"))
    elif not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name) or len(name) > 253:
        hint = _PATTERN_HINTS[NAME_PATTERN]
        problems.append(problem(["metadata", "name"], f"{hint} (got {name!r})"))
    if "spec" not in data:
        return [*problems, problem(["spec"], "required field missing")]
    try:
        spec = model.model_validate(data["spec"], strict=True)
    except ValidationError as e:
        for err in e.errors():
            loc: list[int | str] = ["spec", *err["loc"]]
            message = error_message(err)
            head, sep, rest = message.partition(": ")
            if sep and not err["loc"] and _FIELD.fullmatch(head):
                # A rule over the whole spec that names its field: report it at that field.
                loc, message = [*head.split(".")], rest
            problems.append(problem(loc, _without_path(message, field_path(loc, ""))))
        return problems
    except Exception as e:  # a bug in a validator; report it as a problem, not a traceback
        return [*problems, problem(["spec"], f"cannot be validated: {type(e).__name__}: {e}")]
    if not isinstance(spec, RolloutSpec):
        return problems
    # The gate resolution the operator runs before its first step (the same function).
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    for gate in unresolvable_gates(
        spec,
        namespace if isinstance(namespace, str) and namespace else LINT_NAMESPACE,
        name if isinstance(name, str) and not problems else LINT_NAME,
    ):
        problems.append(problem(list(gate.loc), gate.message))
    return problems


def _documents(text: str) -> Iterator[tuple[Any, yaml.Node | None]]:
    """Each document with its node tree (for line numbers), parsed once."""
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            yield loader.construct_document(node), node
    finally:
        loader.dispose()


def _is_rollout(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and data.get("apiVersion") == API_VERSION
        and data.get("kind") == KIND
    )


def lint_text(source: str, text: str, report: Report) -> None:
    report.files += 1
    parsed = 0  # documents read so far: a syntax error belongs to the next one
    try:
        for data, node in _documents(text):
            report.documents += 1
            report.problems.extend(lint_document(source, parsed, data, node))
            report.rollouts += 1 if _is_rollout(data) else 0
            parsed += 1
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        what = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        message = f"YAML syntax error: {what}" + (f" ({context})" if context else "")
        if mark is not None:
            message += f" (line {mark.line + 1}, column {mark.column + 1})"
        report.problems.append(Problem(source, parsed, "", message))


def _expand(paths: Sequence[str]) -> Iterator[tuple[str, Path | None]]:
    """Files to read, in a stable order: directories recurse into *.yaml / *.yml, skipping
    hidden directories such as .git."""
    for arg in paths:
        if arg == STDIN:
            yield arg, None
            continue
        path = Path(arg)
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                hidden = any(p.startswith(".") for p in found.relative_to(path).parts)
                if found.is_file() and found.suffix in SUFFIXES and not hidden:
                    yield str(found), found
        else:
            yield arg, path


def lint_paths(paths: Sequence[str], stdin: TextIO | None = None) -> Report:
    report = Report()
    for name, path in _expand(paths):
        if path is None:
            text = (stdin or sys.stdin).read()
            name = "<stdin>"
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                report.problems.append(Problem(name, None, "", "no such file or directory"))
                continue
            except (OSError, UnicodeDecodeError) as e:
                report.problems.append(Problem(name, None, "", f"cannot read: {e}"))
                continue
        lint_text(name, text, report)
    return report


def run(paths: Sequence[str], out: TextIO, stdin: TextIO | None = None) -> int:
    report = lint_paths(paths, stdin)
    for p in report.problems:
        print(p, file=out)
    print(report.summary(), file=out)
    return 0 if report.ok else 1
