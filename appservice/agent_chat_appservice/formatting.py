"""How agents' messages look in Element: a small Markdown subset and the structured prefix as
HTML beside the plain body, and mentions as pills (links to matrix.to).

Only what agents write in practice: the ``[STATUS]``-style prefix, ``**bold**``, ``*italic*``,
`` `code` ``, fenced code blocks, and bare links. Everything else is escaped text.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote
import re

from .text import detect_prefix

_PREFIX_COLOURS = {
    "STATUS": "#2a7ab0",
    "DONE": "#2e8b57",
    "BLOCKED": "#c27c0e",
    "ALERT": "#c0392b",
}
_FENCE_RE = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
_INLINE_RE = re.compile(
    r"`(?P<code>[^`\n]+)`"
    r"|\*\*(?P<bold>[^*\n]+)\*\*"
    r"|(?<![\w*])\*(?P<italic>[^*\n]+)\*(?![\w*])"
    r"|(?P<url>https?://[^\s<>\"')]+)"
)


def _inline(text: str, pills: dict[str, str]) -> str:
    out, pos = [], 0
    for match in _INLINE_RE.finditer(text):
        out.append(_with_pills(text[pos : match.start()], pills))
        if match.group("code") is not None:
            out.append(f"<code>{escape(match.group('code'))}</code>")
        elif match.group("bold") is not None:
            out.append(f"<strong>{_with_pills(match.group('bold'), pills)}</strong>")
        elif match.group("italic") is not None:
            out.append(f"<em>{_with_pills(match.group('italic'), pills)}</em>")
        else:
            url = match.group("url")
            out.append(f'<a href="{escape(url)}">{escape(url)}</a>')
        pos = match.end()
    out.append(_with_pills(text[pos:], pills))
    return "".join(out)


def _with_pills(text: str, pills: dict[str, str]) -> str:
    """Escape text, turning each mentioned ``@Name`` into a pill Element recognises."""
    if not pills:
        return escape(text)
    pattern = re.compile(
        "|".join(re.escape(word) for word in sorted(pills, key=len, reverse=True))
    )
    out, pos = [], 0
    for match in pattern.finditer(text):
        out.append(escape(text[pos : match.start()]))
        user_id = pills[match.group(0)]
        link = "https://matrix.to/#/" + quote(user_id, safe="@:")
        out.append(f'<a href="{escape(link)}">{escape(match.group(0))}</a>')
        pos = match.end()
    out.append(escape(text[pos:]))
    return "".join(out)


def to_html(body: str, pills: dict[str, str] | None = None) -> str | None:
    """HTML for the body, or None when plain text says it all.

    ``pills`` maps the text of each mention as written (``@BlueLake``) to its user id.
    """
    pills = pills or {}
    prefix = detect_prefix(body)
    has_markup = bool(_FENCE_RE.search(body) or _INLINE_RE.search(body))
    if not (prefix or has_markup or pills):
        return None
    html_parts: list[str] = []
    rest = body
    if prefix:
        start = body.index("[")
        end = body.index("]", start) + 1
        colour = _PREFIX_COLOURS[prefix]
        html_parts.append(f'<font color="{colour}"><strong>[{prefix}]</strong></font>')
        rest = body[end:]
    pos = 0
    for fence in _FENCE_RE.finditer(rest):
        html_parts.append(_inline(rest[pos : fence.start()], pills).replace("\n", "<br>"))
        html_parts.append(f"<pre><code>{escape(fence.group(1))}</code></pre>")
        pos = fence.end()
    html_parts.append(_inline(rest[pos:], pills).replace("\n", "<br>"))
    return "".join(html_parts)
