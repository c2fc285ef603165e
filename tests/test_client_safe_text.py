"""agent_chat.safe_text: hostile strings are inert after sanitising (pure functions)."""

from __future__ import annotations

import pytest

from agent_chat.safe_text import clean, one_line, record
from helpers import BAD_CHARS, HOSTILE


@pytest.mark.parametrize("name,text,expected", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_clean(name: str, text: str, expected: str) -> None:
    out = clean(text)
    assert out == expected
    assert not (set(out) & BAD_CHARS)


@pytest.mark.parametrize("name,text,expected", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_record_is_one_record(name: str, text: str, expected: str) -> None:
    out = record(text)
    lines = out.split("\n")
    assert all(line.startswith("    ") for line in lines[1:])
    assert not (set(out) & BAD_CHARS)


def test_record_indents_continuations() -> None:
    assert record("a\nb\n\nc\n") == "a\n    b\n    \n    c"
    assert record("a\u2028b") == "a\n    b"


def test_one_line_joins_lines() -> None:
    assert one_line("Blue\nLake\r\n") == "Blue Lake"
    assert one_line("\x1b[2J") == ""


def test_plain_ascii_is_returned_as_is() -> None:
    s = "[STATUS] working on: auth module"
    assert clean(s) is s


def test_non_strings() -> None:
    assert clean(None) == ""
    assert clean(42) == "42"
