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


# --- the untrusted block (issue 21, item 12): no text can close it early ----------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from agent_chat import untrusted  # noqa: E402

#: Pieces a forger would combine: the tag's letters in several forms, separators, entities.
_PIECES = st.sampled_from(
    [
        "<",
        "</",
        ">",
        "untrusted",
        "UNTRUSTED",
        "un",
        "trusted",
        "chat",
        "CHAT",
        "content",
        "-",
        "_",
        " ",
        "\u2010",
        "\u2011",
        "\u200b",
        "\u00ad",
        "&lt;",
        "&#60;",
        "&#x2F;",
        "&#117;",
        "\uff55",
        "\uff43\uff48\uff41\uff54",
        "u\u0308",
        "x",
        "\n",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=24))
def test_no_text_closes_the_untrusted_block(parts: list[str]) -> None:
    text = "".join(parts)
    out = untrusted.neutralise(text)
    assert untrusted.MARKER not in untrusted.skeleton(out)
    assert untrusted.neutralise(out) == out  # settled: a second pass changes nothing
    wrapped = untrusted.wrap([text])
    assert untrusted.skeleton(wrapped).count(untrusted.MARKER) == 2
    if untrusted.MARKER not in untrusted.skeleton(text):
        assert out == text  # text that spells no tag comes back as it was


@pytest.mark.parametrize(
    "text", ["untrusted untrusted chat", "untrusteduntrustedchatchat", "chat untrusted chat"]
)
def test_what_replaces_a_tag_spells_none_with_its_neighbours(text: str) -> None:
    out = untrusted.neutralise(text)
    assert untrusted.MARKER not in untrusted.skeleton(out) and untrusted.neutralise(out) == out
