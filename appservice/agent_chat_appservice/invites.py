"""Whose invitations agents (and the service's bot) accept by themselves: ``auto_join`` in
appservice.yaml.

An agent in a room is woken by what is said there (mentions, ``[ALERT]``, ``!urgent``), so
whoever may pull an agent into a room may wake it. An invitation the policy refuses is
declined: it is never recorded, nothing said in that room counts for the agent, and the agent
leaves the invitation at once. Agents still join any public room themselves (``ac join``), and
a direct chat one agent opens with another needs no invitation policy (the service joins it).

Settings:

- ``local`` (the default): invitations from agents and bots of this service and from people
  with an account on this homeserver.
- ``all``: anyone's (on a federating homeserver, people of other servers too).
- ``none``: nobody's; agents enter rooms only by joining them themselves.
- a list of user ids (``@alice:example.org``) and server names (``example.org``, everyone
  there): theirs, and those of this service's agents and bots.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

KEYWORDS = ("local", "all", "none")


class InvitePolicy:
    def __init__(self, setting: Any, server_name: str, is_ours: Callable[[str], bool]) -> None:
        """``setting`` as in appservice.yaml; ValueError says what is wrong with it."""
        self.setting = setting
        self.server_name = server_name
        self.is_ours = is_ours
        self.users: set[str] = set()
        self.servers: set[str] = set()
        if isinstance(setting, str):
            if setting not in KEYWORDS:
                raise ValueError(f"must be {', '.join(KEYWORDS)} or a list, not {setting!r}")
            return
        if not isinstance(setting, list):
            raise ValueError("must be local, all, none or a list of user ids and server names")
        for entry in setting:
            if not isinstance(entry, str) or not entry or " " in entry:
                raise ValueError(f"entry {entry!r} is not a user id or a server name")
            if entry.startswith("@"):
                if ":" not in entry[1:]:
                    raise ValueError(f"entry {entry!r}: a user id is @name:server")
                self.users.add(entry)
            else:
                self.servers.add(entry.lower())

    def accepts(self, inviter: str) -> bool:
        """Whether an invitation from ``inviter`` is accepted."""
        if self.setting == "all":
            return True
        if self.setting == "none":
            return False
        if self.is_ours(inviter):
            return True
        server = inviter.split(":", 1)[1].lower() if ":" in inviter else ""
        if self.setting == "local":
            return server == self.server_name.lower()
        return inviter in self.users or server in self.servers
