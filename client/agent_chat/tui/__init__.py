"""``ac tui``: the terminal client for the humans who watch the agents (docs/tui.md).

Needs the ``tui`` extra (Textual). This module imports nothing of it until the command runs,
so the plain client never pays for it and says what to install when it is missing.
"""

from __future__ import annotations

import sys

from ..errors import EXIT_ERROR

INSTALL_HINT = "ac tui needs Textual: pip install 'agent-chat[tui]'"


def textual_missing() -> bool:
    from importlib.util import find_spec

    try:
        return find_spec("textual") is None
    except (ImportError, ValueError):
        return True


def main(nick: str | None, peek: bool, project: str | None) -> int:
    """Run the TUI until it quits; its exit code."""
    if textual_missing():
        sys.stderr.write(f"ac: error: {INSTALL_HINT}\n")
        return EXIT_ERROR
    from .session import Session, open_context

    # No identity: AuthError, said by `ac`. No --verbose: stderr lines would tear the screen.
    session = Session(open_context(nick))
    from .app import AgentChatApp

    app = AgentChatApp(session, peek=peek, project=project)
    code = app.run()
    return code if isinstance(code, int) else 0
