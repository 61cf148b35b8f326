"""Byte caps on copied text, and the marks of handled annotations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from segue.api.text import (
    ELLIPSIS,
    MAX_ANNOTATION_BYTES,
    annotation_mark,
    cap,
    utf8,
    wire_size,
)

DERANDOMIZED = settings(derandomize=True, max_examples=300, deadline=None)


def test_short_text_is_kept() -> None:
    assert cap("rolling back", 1024) == "rolling back"
    assert cap("", 0) == ""
    assert cap("ab", 2) == "ab"


def test_long_text_is_cut_and_marked() -> None:
    assert cap("abcdefghij", 8) == "abcde" + ELLIPSIS
    assert len(utf8(cap("x" * 5000, 1024))) == 1024


def test_cut_never_splits_a_character() -> None:
    # "é" is two bytes, "€" three, "😀" four: a cut inside one drops the whole character.
    assert cap("é" * 10, 8) == "éé" + ELLIPSIS
    assert cap("€" * 10, 8) == "€" + ELLIPSIS
    assert cap("😀" * 10, 8) == "😀" + ELLIPSIS
    assert cap("😀" * 10, 6) == ELLIPSIS
    assert cap("😀" * 10, 2) == ""


def test_lone_surrogates_do_not_raise() -> None:
    text = "\ud800" * 100
    assert len(utf8(cap(text, 10))) <= 10


@DERANDOMIZED
@given(text=st.text(max_size=600), limit=st.integers(0, 700))
def test_cap_fits_and_keeps_a_prefix(text: str, limit: int) -> None:
    out = cap(text, limit)
    assert len(utf8(out)) <= limit
    if len(utf8(text)) <= limit:
        assert out == text
    else:
        assert text.startswith(out.removesuffix(ELLIPSIS))


def test_annotation_mark() -> None:
    assert annotation_mark("3") == "3"
    short = "x" * MAX_ANNOTATION_BYTES
    assert annotation_mark(short) == short
    long = "x" * (200 * 1024)
    mark = annotation_mark(long)
    assert mark.startswith("sha256:") and len(mark) == len("sha256:") + 32
    assert annotation_mark(mark) == mark  # stored, read back, marked again
    assert annotation_mark(long + "y") != mark


@DERANDOMIZED
@given(a=st.text(max_size=400), b=st.text(max_size=400))
def test_marks_are_equal_exactly_when_values_are(a: str, b: str) -> None:
    assert (annotation_mark(a) == annotation_mark(b)) == (a == b)
    assert len(utf8(annotation_mark(a))) <= MAX_ANNOTATION_BYTES


def test_wire_size_counts_escapes() -> None:
    assert wire_size("ab") == 4
    assert wire_size("\x00") == 8  # "\u0000" and the quotes
    assert wire_size({"a": 1}) == len('{"a": 1}')
