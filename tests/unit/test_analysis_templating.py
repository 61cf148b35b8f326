"""Placeholder substitution and escaping, checked against a reading of PromQL's lexer."""

from __future__ import annotations

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from segue.analysis.providers.prometheus.templating import (
    TemplateError,
    check,
    duration_ms,
    escape_string_literal,
    format_duration,
    placeholders_in,
    render,
    validate_label_value,
)

# --- a small PromQL string-literal reader --------------------------------------------------
# Written from Prometheus' rules (promql/parser/lex.go, util/strutil/quote.go), not from
# the code under test, so the round-trip property means something.
_SIMPLE_ESCAPES = {
    "a": 0x07,
    "b": 0x08,
    "f": 0x0C,
    "n": 0x0A,
    "r": 0x0D,
    "t": 0x09,
    "v": 0x0B,
    "\\": 0x5C,
}


class PromQLSyntaxError(ValueError):
    pass


def unquote(literal: str) -> str:
    """The value of one complete PromQL string literal, quotes included."""
    if len(literal) < 2 or literal[0] not in "\"'`" or literal[-1] != literal[0]:
        raise PromQLSyntaxError(f"not a string literal: {literal!r}")
    quote, body = literal[0], literal[1:-1]
    if quote == "`":
        if "`" in body:
            raise PromQLSyntaxError("backtick inside a raw string")
        return body
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\n":
            raise PromQLSyntaxError("newline in string")
        if ch == quote:
            raise PromQLSyntaxError("unescaped quote inside string")
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        if i + 1 >= len(body):
            raise PromQLSyntaxError("escape at end of string")
        c = body[i + 1]
        i += 2
        if c in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[c])
        elif c == quote:
            out += c.encode()
        elif c in "\"'":
            # Only the quote kind that opened the string may be escaped.
            raise PromQLSyntaxError(f"unknown escape sequence \\{c}")
        elif c in "01234567":
            digits = body[i - 1 : i + 2]
            if len(digits) != 3 or any(d not in "01234567" for d in digits):
                raise PromQLSyntaxError("bad octal escape")
            value = int(digits, 8)
            if value > 255:
                raise PromQLSyntaxError("octal escape out of range")
            out.append(value)
            i += 2
        elif c in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[c]
            digits = body[i : i + n]
            if len(digits) != n or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise PromQLSyntaxError(f"bad \\{c} escape")
            value = int(digits, 16)
            i += n
            if c == "x":
                out.append(value)
            else:
                if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                    raise PromQLSyntaxError("escape is not a valid Unicode code point")
                out += chr(value).encode("utf-8")
        else:
            raise PromQLSyntaxError(f"unknown escape sequence \\{c}")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PromQLSyntaxError("string is not valid UTF-8") from e


def split_literals(query: str) -> tuple[list[str], list[str]]:
    """(code outside string literals and comments, in pieces; the literals' values)."""
    code: list[str] = []
    literals: list[str] = []
    piece: list[str] = []
    i = 0
    while i < len(query):
        ch = query[i]
        if ch == "#":
            end = query.find("\n", i)
            i = len(query) if end < 0 else end
            continue
        if ch not in "\"'`":
            piece.append(ch)
            i += 1
            continue
        j = i + 1
        while j < len(query) and query[j] != ch:
            if ch != "`" and query[j] == "\\":
                j += 1
            j += 1
        if j >= len(query):
            raise PromQLSyntaxError("unterminated string")
        literals.append(unquote(query[i : j + 1]))
        code.append("".join(piece))
        piece = []
        i = j + 1
    code.append("".join(piece))
    return code, literals


# --- templating tests --------------------------------------------------------------------

CTX = {"version": "v2", "namespace": "shop", "rollout": "checkout", "interval": "30s"}


def test_substitutes_every_placeholder_whitespace_tolerant():
    query = (
        'sum(rate(x{app="{{rollout}}",ns="{{  namespace }}",version="{{ version  }}"}'
        "[{{\tinterval }}]))"
    )
    assert render(query, **CTX) == ('sum(rate(x{app="checkout",ns="shop",version="v2"}[30s]))')


def test_single_quoted_and_raw_strings_and_comments():
    query = (
        "x{a='{{ version }}', b=`{{ rollout }}`} # for {{ version }}\n+ y{c=\"{{ namespace }}\"}"
    )
    assert render(query, **CTX) == "x{a='v2', b=`checkout`} # for v2\n+ y{c=\"shop\"}"


def test_unknown_placeholder_is_named():
    with pytest.raises(TemplateError, match=r"unknown placeholder \{\{ verison \}\}") as e:
        render('x{v="{{ verison }}"}', **CTX)
    assert e.value.field == "verison"


def test_go_template_syntax_gets_a_hint():
    with pytest.raises(TemplateError, match="without a leading dot"):
        render('x{v="{{ .Version }}"}', **CTX)


def test_unclosed_braces():
    with pytest.raises(TemplateError, match="not closed"):
        render('x{v="{{ version"}', **CTX)


def test_label_placeholder_outside_string_is_refused():
    with pytest.raises(TemplateError, match="inside a quoted string") as e:
        render("x{version={{ version }}}", **CTX)
    assert e.value.field == "version"


def test_interval_may_stand_bare():
    assert render("rate(x[{{ interval }}]) offset {{interval}}", **CTX) == (
        "rate(x[30s]) offset 30s"
    )


def test_escaped_quote_in_template_does_not_end_the_string():
    # The placeholder sits after an escaped quote: still inside the string literal.
    assert render(r'x{v="a\"{{ version }}"}', **CTX) == r'x{v="a\"v2"}'


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", 'v2"} or vector(1) #'),
        ("version", "v2\n"),
        ("version", ""),
        ("version", "-v2"),
        ("version", "v2."),
        ("version", "a" * 64),
        ("namespace", "shop ns"),
        ("rollout", "check/out"),
        ("version", "v2\\"),
    ],
)
def test_bad_label_values_name_the_field(field, value):
    values = dict(CTX, **{field: value})
    with pytest.raises(TemplateError, match=f"^{field} ") as e:
        render('x{a="{{ version }}",b="{{ namespace }}",c="{{ rollout }}"}', **values)
    assert e.value.field == field


def test_label_value_limits():
    assert validate_label_value("version", "a" * 63) == "a" * 63
    assert validate_label_value("version", "v1.2_3-rc.1") == "v1.2_3-rc.1"
    assert validate_label_value("version", "7") == "7"


@pytest.mark.parametrize("value", ["30s", "1m", "1m30s", "2h", "500ms", "1d", "1w", "1y"])
def test_good_intervals(value):
    assert render("rate(x[{{ interval }}])", **dict(CTX, interval=value)) == f"rate(x[{value}])"


@pytest.mark.parametrize(
    "value", ["", "30", "0s", "s", "1.5m", "30s ", "1s1m", "30s]) or vector(1"]
)
def test_bad_intervals(value):
    with pytest.raises(TemplateError, match=r"^interval") as e:
        render("rate(x[{{ interval }}])", **dict(CTX, interval=value))
    assert e.value.field == "interval"


def test_unused_placeholders_are_not_validated():
    assert render('x{v="{{ version }}"}', **dict(CTX, namespace="not valid!")) == 'x{v="v2"}'


def test_duration_helpers():
    assert duration_ms("1m30s") == 90_000
    assert duration_ms("1h2m3s4ms") == 3_723_004
    assert format_duration(30) == "30s"
    assert format_duration(90) == "1m30s"
    assert format_duration(0.25) == "250ms"
    assert format_duration(7200) == "2h"
    with pytest.raises(ValueError):
        format_duration(0)


def test_check_reports_problems_without_values():
    check('rate(x{v="{{ version }}"}[{{ interval }}])')
    with pytest.raises(TemplateError):
        check("x{v={{ version }}}")
    assert placeholders_in('x{v="{{version}}"}[{{ interval }}]') == ["version", "interval"]


def test_escape_uses_escapes_valid_in_both_quote_kinds():
    assert escape_string_literal("a\"b'c\\d") == "a\\x22b\\x27c\\\\d"
    for quote in "\"'":
        assert unquote(quote + escape_string_literal("a\"b'c\\d") + quote) == "a\"b'c\\d"


@pytest.mark.parametrize("ch", ["\n", "\r", "\x00", "\x7f", "\u202e", "\u2028", "\ud800"])
def test_escape_refuses_control_characters(ch):
    with pytest.raises(TemplateError, match="control character"):
        escape_string_literal(f"a{ch}b", "version")


# --- properties --------------------------------------------------------------------------


@given(st.text())
def test_escaped_value_reads_back_identically(value):
    try:
        escaped = escape_string_literal(value)
    except TemplateError:
        event("refused")
        return
    event("escaped")
    for quote in "\"'":
        assert unquote(quote + escaped + quote) == value


label_like = st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?\Z")
any_value = st.one_of(st.text(), label_like, st.text(alphabet="\"'`\\{}#\n av-.", max_size=12))


@given(version=any_value, namespace=any_value, rollout=any_value)
def test_rendered_query_keeps_its_shape(version, namespace, rollout):
    """Either rendering fails, or the query has the same code outside its string literals
    and each literal reads back as the template's text with the raw values put in."""
    template = (
        "sum(rate(x{v=\"{{ version }}\", n='{{ namespace }}', r=`{{ rollout }}`,"
        ' both="{{version}}-{{ rollout }}"}[{{ interval }}])) # {{ namespace }}'
    )
    try:
        rendered = render(
            template, version=version, namespace=namespace, rollout=rollout, interval="1m"
        )
    except TemplateError:
        event("refused")
        return
    event("rendered")
    code, literals = split_literals(rendered)
    assert code == ["sum(rate(x{v=", ", n=", ", r=", ", both=", "}[1m])) "]
    assert literals == [version, namespace, rollout, f"{version}-{rollout}"]
