"""The compose box: multi-line text; Enter sends, Ctrl+J (or Alt+Enter) starts a new line,
Tab completes ``@nick`` and ``#room``, Escape leaves it (and cancels a reply)."""

from __future__ import annotations

from textual import events
from textual.message import Message
from textual.widgets import TextArea

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def complete(word: str, candidates: list[str]) -> tuple[str, list[str]]:
    """``word`` completed against ``candidates`` (case-insensitive): the longest common
    completion and every match."""
    low = word.lower()
    matches = sorted({c for c in candidates if c.lower().startswith(low)}, key=str.lower)
    if not matches:
        return word, []
    if len(matches) == 1:
        return matches[0], matches
    prefix = matches[0]
    for m in matches[1:]:
        n = 0
        while n < min(len(prefix), len(m)) and prefix[n].lower() == m[n].lower():
            n += 1
        prefix = prefix[:n]
    return (prefix if len(prefix) > len(word) else word), matches


class Composer(TextArea):
    DEFAULT_CSS = """
    Composer { height: 4; border: tall $primary 40%; }
    Composer:focus { border: tall $accent; }
    """

    class Submitted(Message):
        def __init__(self, body: str) -> None:
            super().__init__()
            self.body = body

    class Cancelled(Message):
        pass

    class Completions(Message):
        def __init__(self, matches: list[str]) -> None:
            super().__init__()
            self.matches = matches

    def __init__(self, candidates: Callable[[str], list[str]], id: str | None = None) -> None:
        super().__init__(id=id, soft_wrap=True, show_line_numbers=False, tab_behavior="focus")
        self.candidates = candidates

    async def _on_key(self, event: events.Key) -> None:
        key = event.key
        if key == "enter":
            event.stop()
            event.prevent_default()
            body = self.text
            if body.strip():
                self.post_message(self.Submitted(body))
            return
        if key in ("ctrl+j", "alt+enter", "shift+enter"):
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        if key == "escape":
            event.stop()
            event.prevent_default()
            self.post_message(self.Cancelled())
            return
        if key == "tab" and self._complete():
            event.stop()
            event.prevent_default()
            return
        await super()._on_key(event)

    def _complete(self) -> bool:
        """Complete the ``@``/``#`` word before the cursor; False when there is none."""
        row, col = self.cursor_location
        line = self.document.get_line(row)
        start = col
        while start > 0 and not line[start - 1].isspace():
            start -= 1
        word = line[start:col]
        if len(word) < 1 or word[0] not in "@#":
            return False
        done, matches = complete(word, self.candidates(word[0]))
        if matches:
            if len(matches) == 1:
                done += " "
            self.replace(done, (row, start), (row, col))
        self.post_message(self.Completions(matches))
        return True
