"""Make text written by someone else inert before it reaches a terminal.

Everything that came from another user (message bodies, display names, room names, topics, error
texts) goes through here in human output. Removed:

- escape sequences: CSI (``ESC [`` and C1 ``0x9B``), OSC (``ESC ]``/``0x9D``, ended by BEL or
  ST), DCS/SOS/PM/APC strings (``ESC P X ^ _`` and their C1 forms) and every other ``ESC``
  sequence; a lone ESC;
- C0 controls except newline and tab (tab becomes a space, CR is dropped: no overwriting), DEL,
  C1 controls U+0080-U+009F;
- bidi controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C), zero-width and invisible
  characters (U+200B-U+200D, U+2060-U+2064, U+FEFF, U+180E, U+FFF9-U+FFFB, tag characters
  U+E0000-U+E007F) and lone surrogates.

Newlines (and U+2028/U+2029) are kept only by :func:`clean`; :func:`record` turns them into
indented continuation lines so that one message is always one record, and :func:`one_line`
turns them into spaces (for names). ``--json`` output never goes through here: it keeps the raw
text and relies on JSON escaping.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re

_ST_STRING = r"[^\x07\x18\x1a\x1b\x9c]*(?:\x07|\x1b\\|\x9c|[\x18\x1a]|(?=\x1b)|\Z)"

_ESCAPES_PATTERN = (
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"  # CSI (an unfinished one is dropped too)
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])"
    + _ST_STRING  # OSC, DCS, SOS, PM, APC
    + r"|\x1b[ -/]*[0-~]?"  # any other ESC sequence, or a lone ESC
)

_INVISIBLE_PATTERN = (
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"
    "\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufff9-\ufffb"
    "\ud800-\udfff\U000e0000-\U000e007f]"
)

_compiled: tuple[re.Pattern[str], re.Pattern[str]] | None = None


def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The two regexes, compiled on first need (plain ASCII text never needs them)."""
    global _compiled
    if _compiled is None:
        import re

        _compiled = (re.compile(_ESCAPES_PATTERN), re.compile(_INVISIBLE_PATTERN))
    return _compiled


_INDENT = "    "
_INTRODUCERS = "\x1b\x9b\x90\x98\x9d\x9e\x9f"


def clean(text: object) -> str:
    """Strip escape sequences and invisible/control characters; keep newlines (``\\n``).

    Anything that is not a string is shown as ``str()`` shows it (None as nothing).
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if text.isascii() and text.isprintable():
        return text
    escapes, invisible = _patterns()
    if any(c in text for c in _INTRODUCERS):
        text = escapes.sub("", text)
    text = text.replace("\t", " ").replace("\u2028", "\n").replace("\u2029", "\n")
    return invisible.sub("", text)


def one_line(text: object) -> str:
    """:func:`clean`, with line breaks turned into spaces (names, room names, topics)."""
    text = clean(text)
    if "\n" in text:
        text = " ".join(part.strip() for part in text.split("\n") if part.strip())
    return text


def record(text: object, indent: str = _INDENT) -> str:
    """:func:`clean`, with each further line indented: one message stays one record."""
    text = clean(text)
    if "\n" in text:
        text = text.strip("\n").replace("\n", "\n" + indent)
    return text
