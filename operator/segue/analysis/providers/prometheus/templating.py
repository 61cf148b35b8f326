"""Placeholder substitution in PromQL, safe against injection.

A gate's query names the values of the round it runs in: ``{{ version }}``,
``{{ namespace }}``, ``{{ rollout }}`` and ``{{ interval }}`` (spaces inside the braces are
optional). Two independent guards keep a value from changing what a query means:

* Each value is validated: the label-like ones against the Kubernetes label value charset,
  the interval against Prometheus' duration syntax.
* The template is scanned like PromQL's lexer does, so we know whether each placeholder
  stands inside a string literal. Inside one, the value is escaped (backslash, both quote
  kinds, and control characters refused); outside one, only ``{{ interval }}`` is allowed,
  since a bare label value is never valid PromQL anyway.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Final

PLACEHOLDERS: Final = ("version", "namespace", "rollout", "interval")
LABEL_PLACEHOLDERS: Final = frozenset({"version", "namespace", "rollout"})

LABEL_VALUE_RE: Final = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
LABEL_VALUE_MAX: Final = 63
# Prometheus' own duration grammar (model.ParseDuration): units in decreasing order.
# ASCII digits only: Python's \d would also take other scripts' digits, which Prometheus
# refuses.
DURATION_RE: Final = re.compile(
    r"(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?"
    r"(?:([0-9]+)ms)?"
)
_DURATION_UNITS_MS: Final = (
    365 * 86_400_000,
    7 * 86_400_000,
    86_400_000,
    3_600_000,
    60_000,
    1_000,
    1,
)
_REGEX_META: Final = frozenset("\\.+*?()|[]{}^$")
_PLACEHOLDER_RE: Final = re.compile(r"\{\{\s*(.*?)\s*\}\}", re.DOTALL)
# Control, surrogate, format (bidi overrides...) and line/paragraph separators: none belongs
# in a label value, and some could make a rendered query read differently than it parses.
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})


class TemplateError(ValueError):
    """A query template or one of the values substituted into it is not acceptable.

    ``field`` names the offending placeholder when there is one; ``label`` the gate
    template label at fault, when there is one.
    """

    def __init__(self, message: str, field: str | None = None, *, label: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.label = label


def validate_label_value(field: str, value: str) -> str:
    """``value`` if it is a conservative Kubernetes label value, else a TemplateError."""
    if len(value) > LABEL_VALUE_MAX or not LABEL_VALUE_RE.fullmatch(value):
        raise TemplateError(
            f"{field} {value!r} is not a valid label value: use letters, digits, '-', '_' "
            f"and '.', starting and ending with a letter or digit, at most {LABEL_VALUE_MAX} "
            "characters",
            field,
        )
    return value


def duration_ms(value: str) -> int:
    """Milliseconds of a Prometheus duration such as ``30s`` or ``1m30s``."""
    m = DURATION_RE.fullmatch(value)
    if not value or m is None:
        raise TemplateError(
            f"interval {value!r} is not a Prometheus duration (e.g. 30s, 1m, 1m30s)", "interval"
        )
    return sum(int(g) * unit for g, unit in zip(m.groups(), _DURATION_UNITS_MS, strict=True) if g)


def validate_duration(field: str, value: str) -> str:
    """``value`` if it is a positive Prometheus duration, else a TemplateError."""
    try:
        ms = duration_ms(value)
    except TemplateError:
        raise TemplateError(
            f"{field} {value!r} is not a Prometheus duration (e.g. 30s, 1m, 1m30s)", field
        ) from None
    if ms <= 0:
        raise TemplateError(f"{field} must be longer than zero, got {value!r}", field)
    return value


def format_duration(seconds: float) -> str:
    """A positive number of seconds as a Prometheus duration: 30 -> "30s", 90 -> "1m30s"."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be positive, got {seconds!r}")
    ms = max(1, round(seconds * 1000))
    parts = []
    for suffix, unit in (("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)):
        count, ms = divmod(ms, unit)
        if count:
            parts.append(f"{count}{suffix}")
    return "".join(parts)


def escape_string_literal(value: str, field: str = "value") -> str:
    """``value`` escaped to sit between the quotes of a PromQL string literal (either kind).

    Quotes become hex escapes rather than ``\\"``: PromQL only accepts a backslash before the
    quote kind that opened the string, while ``\\x22``/``\\x27`` are valid in both.
    """
    _refuse_control_characters(value, field)
    return value.replace("\\", "\\\\").replace('"', "\\x22").replace("'", "\\x27")


def _refuse_control_characters(value: str, field: str) -> None:
    for ch in value:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise TemplateError(
                f"{field} contains the control character U+{ord(ch):04X}; it cannot be "
                "placed in a query",
                field,
            )


def placeholders_in(template: str) -> list[str]:
    """Names of the placeholders a template uses, in order of appearance."""
    return [m.group(1) for m in _PLACEHOLDER_RE.finditer(template)]


def render(template: str, *, version: str, namespace: str, rollout: str, interval: str) -> str:
    """The template with its placeholders replaced by validated, escaped values.

    Raises TemplateError naming the placeholder or field at fault.
    """
    values = {"version": version, "namespace": namespace, "rollout": rollout, "interval": interval}
    return _Renderer(template, values).render()


def render_value(
    text: str, *, version: str, namespace: str, rollout: str, interval: str, field: str = "value"
) -> str:
    """``text`` (a label value, such as a template's ``app``) with its placeholders replaced
    by their validated values, unescaped: the value as Prometheus compares it. Raises
    TemplateError as ``render`` would."""
    values = {"version": version, "namespace": namespace, "rollout": rollout, "interval": interval}
    renderer = _Renderer(text, values)

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise TemplateError(f"unknown placeholder {{{{ {name} }}}}", name)
        return renderer.validated(name)

    rendered = _PLACEHOLDER_RE.sub(value, text)
    _refuse_control_characters(rendered, field)
    return rendered


def regex_escape(value: str) -> str:
    """``value`` as an RE2 regex (Prometheus' ``=~``) matching exactly ``value``: each RE2
    metacharacter behind a backslash. Escape the result again for the string literal it
    stands in (:func:`escape_string_literal`)."""
    return "".join("\\" + ch if ch in _REGEX_META else ch for ch in value)


def check(template: str) -> None:
    """Raise the TemplateError ``render`` would raise for any valid values: unknown or
    misplaced placeholders, unclosed braces. Lets a Rollout be refused before it runs."""
    render(template, version="v", namespace="ns", rollout="r", interval="1m")


class _Renderer:
    """A scan of the template that tracks PromQL lexical context (as promql/parser/lex.go):
    bare code, a "..." or '...' string with backslash escapes, a `...` raw string, or a
    # comment running to the end of the line."""

    def __init__(self, template: str, values: dict[str, str]) -> None:
        self.template = template
        self.values = values
        self.checked: dict[str, str] = {}

    def render(self) -> str:
        t = self.template
        out: list[str] = []
        context = ""  # "" bare, a quote character inside a string, "#" inside a comment
        i = 0
        while i < len(t):
            if t.startswith("{{", i):
                m = _PLACEHOLDER_RE.match(t, i)
                if m is None:
                    raise TemplateError(f"'{{{{' at offset {i} is not closed by '}}}}'")
                out.append(self.substitute(m.group(1), context))
                i = m.end()
                continue
            ch = t[i]
            out.append(ch)
            i += 1
            if context == "":
                if ch in "\"'`":
                    context = ch
                elif ch == "#":
                    context = "#"
            elif context == "#":
                if ch == "\n":
                    context = ""
            elif context in "\"'" and ch == "\\" and i < len(t):
                # An escaped character never closes the string; copy it as it is.
                out.append(t[i])
                i += 1
            elif ch == context:
                context = ""
        return "".join(out)

    def substitute(self, name: str, context: str) -> str:
        if name not in self.values:
            hint = ""
            if name.startswith(".") or name.startswith("args."):
                hint = " (Segue placeholders are lower-case names without a leading dot)"
            raise TemplateError(
                f"unknown placeholder {{{{ {name} }}}}{hint}; known: "
                + ", ".join(f"{{{{ {p} }}}}" for p in PLACEHOLDERS),
                name,
            )
        value = self.validated(name)
        if context in ('"', "'"):
            return escape_string_literal(value, name)
        if context == "`":
            # A raw string has no escapes; only its own delimiter could end it early.
            if "`" in value:
                raise TemplateError(f"{name} contains a backtick; it cannot be placed here", name)
            _refuse_control_characters(value, name)
            return value
        if context == "" and name in LABEL_PLACEHOLDERS:
            raise TemplateError(
                f"placeholder {{{{ {name} }}}} must stand inside a quoted string, "
                f'e.g. {name}="{{{{ {name} }}}}"',
                name,
            )
        return value

    def validated(self, name: str) -> str:
        if name not in self.checked:
            value = self.values[name]
            if name == "interval":
                self.checked[name] = validate_duration(name, value)
            else:
                self.checked[name] = validate_label_value(name, value)
        return self.checked[name]
