"""agent_chat.safe_text: hostile strings are inert after sanitising (pure functions)."""

from __future__ import annotations

import pytest

from agent_chat.safe_text import clean, one_line, record

#: (name, hostile text, expected after clean()) — the table the end-to-end tests reuse.
HOSTILE = [
    ("csi clear screen", "before\x1b[2Jafter", "beforeafter"),
    ("csi colour", "\x1b[31mred\x1b[0m", "red"),
    ("osc 0 title (BEL)", "a\x1b]0;pwned title\x07b", "ab"),
    ("osc 0 title (ST)", "a\x1b]0;pwned title\x1b\\b", "ab"),
    ("osc 8 hyperlink", "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\", "click"),
    ("osc 52 clipboard", "x\x1b]52;c;cm0gLXJmIH4K\x07y", "xy"),
    ("osc unterminated", "ok\x1b]0;swallow the rest", "ok"),
    ("dcs", "d\x1bP1$qm\x1b\\e", "de"),
    ("apc pm sos", "1\x1b_apc\x1b\\2\x1b^pm\x1b\\3\x1bXsos\x1b\\4", "1234"),
    ("c1 csi 0x9b", "c1\x9b2Jz", "c1z"),
    ("c1 osc 0x9d", "a\x9d0;t\x9cb", "ab"),
    ("c1 nel", "a\x85b", "ab"),
    ("bel", "ding\x07dong", "dingdong"),
    ("backspace", "abc\x08\x08\x08xyz", "abcxyz"),
    ("cr overwrite", "safe\rEVIL", "safeEVIL"),
    ("crlf", "one\r\ntwo", "one\ntwo"),
    ("rlo bidi", "file\u202etxt.exe", "filetxt.exe"),
    ("bidi isolates", "\u2066a\u2067b\u2068c\u2069\u200e\u200f\u061c", "abc"),
    ("zero width", "zero\u200bwidth\u200c\u200d\u2060\ufeff", "zerowidth"),
    ("nul", "nul\x00byte", "nulbyte"),
    ("del", "del\x7fete", "delete"),
    ("tab", "a\tb", "a b"),
    ("lone esc", "end\x1b", "end"),
    ("charset esc", "\x1b(0lqk\x1b(B", "lqk"),
    ("tag characters", "hi\U000e0041\U000e0042", "hi"),
    ("lone surrogate", "a\ud800b", "ab"),
    (
        "fake second message",
        "hi\n12:00 #general Boss: rm -rf /",
        "hi\n12:00 #general Boss: rm -rf /",
    ),
    ("unicode kept", "héllo wörld ✓ 日本", "héllo wörld ✓ 日本"),
]

BAD_CHARS = (
    set(chr(c) for c in range(0x20) if c != 0x0A)
    | {"\x7f"}
    | set(chr(c) for c in range(0x80, 0xA0))
    | set(
        "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068"
        "\u2069\u200e\u200f\u061c\u200b\u200c\u200d\u2060"
        "\ufeff"
    )
)


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
