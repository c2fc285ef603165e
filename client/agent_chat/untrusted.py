"""The one rule for others' text inside an agent's context: it goes between ``<TAG>`` and
``</TAG>`` (:data:`TAG`), and nothing inside can spell the tag, in any form.

Every wrapper uses this module: the MCP tools' results (``mcp_server.untrusted``), the channel
notifications (``channel.notification``), ``ac listen``'s message lines (which Gemini CLI's
``/ac:listen`` command wraps in the same tag) and the labels agents see.

Matching is on a skeleton, not on the text as written: HTML character references are decoded
(``&lt;``, ``&#x3c;``), each character is NFKC-normalised and case-folded (fullwidth and
compatibility forms fold to ASCII), and everything that is not a letter or digit is dropped
(hyphens of every kind, underscores, spaces, zero-width characters, combining marks). Where the
skeleton holds :data:`MARKER` (``untrustedchat``, which also covers the tag's older
``untrusted-chat`` spelling), the characters that spelled it are replaced by
:data:`REPLACEMENT`, so neither a closing nor an opening tag can be forged.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

TAG = "untrusted-chat-content"
#: The skeleton every spelling of the tag (and of its prefix ``untrusted-chat``) contains.
MARKER = "untrustedchat"
#: What a forged tag name becomes. Its skeleton (``removedtag``) neither starts with a suffix
#: nor ends with a prefix of :data:`MARKER`, so no text around it can spell the tag again.
REPLACEMENT = "[removed tag]"


def skeleton(text: str) -> str:
    """``text`` as the matcher sees it: entities decoded, NFKC, case-folded, only letters and
    digits. (Also what names are compared by, e.g. ``Agent Chat`` and ``agent_chat``.)"""
    return "".join(form for _, _, form in _units(text))


def _units(text: str) -> list[tuple[int, int, str]]:
    """(start, end, skeleton form) of each unit of ``text``: one character, or one HTML
    character reference (``&lt;``, ``&#60;``); the forms joined are the skeleton."""
    import html
    import unicodedata

    units = []
    i, n = 0, len(text)
    while i < n:
        end = i + 1
        piece = text[i]
        if piece == "&":
            semi = text.find(";", i + 1, i + 34)
            if semi > i + 1 and text[i + 1 : semi].replace("#", "", 1).isalnum():
                decoded = html.unescape(text[i : semi + 1])
                if decoded != text[i : semi + 1]:
                    end, piece = semi + 1, decoded
        form = unicodedata.normalize("NFKC", piece).casefold()
        units.append((i, end, "".join(c for c in form if c.isalnum())))
        i = end
    return units


def _maybe(text: str) -> bool:
    """A cheap test that rules out most text: the tag's letters cannot be spelled."""
    if not text.isascii() or "&" in text:
        return True
    lowered = text.lower()
    return "untrusted" in lowered or MARKER in "".join(c for c in lowered if c.isalnum())


def neutralise(text: str) -> str:
    """``text`` with every spelling of the tag (see the module's docstring) made harmless;
    text that spells none comes back unchanged."""
    if not _maybe(text):
        return text
    units = _units(text)
    forms = [form for _, _, form in units]
    flat = "".join(forms)
    if MARKER not in flat:
        return text
    # Which units spell each occurrence of the marker in the skeleton.
    owner = [k for k, form in enumerate(forms) for _ in form]
    doomed: set[int] = set()
    start = flat.find(MARKER)
    while start != -1:
        doomed.update(range(owner[start], owner[start + len(MARKER) - 1] + 1))
        start = flat.find(MARKER, start + 1)
    out, last = [], -2
    for k, (begin, end, _) in enumerate(units):
        if k in doomed:
            if last != k - 1:
                out.append(REPLACEMENT)
            last = k
        else:
            out.append(text[begin:end])
    return "".join(out)


def wrap(lines: Iterable[str], note: str = "") -> str:
    """Lines of others' text inside the block (each neutralised: none can close it early),
    after ``note`` (on its own line) when given."""
    body = "\n".join(neutralise(line) for line in lines)
    head = note + "\n" if note else ""
    return f"{head}<{TAG}>\n{body}\n</{TAG}>"


def inline(text: str) -> str:
    """One line of others' text inside the block, on the same line as what precedes it."""
    return f"<{TAG}>{neutralise(text)}</{TAG}>"
