"""The shapes of Matrix identifiers, one definition each: what the homeserver pushes (ingest)
and what callers name (the API) are checked against the same patterns.

Printable ASCII only, within the spec's 255-byte limit: anything else in an id is refused
before it reaches the ledger or a query.
"""

from __future__ import annotations

import re

#: A room id, unanchored (for patterns that hold one, as ``covers`` does).
ROOM_ID = r"![\x21-\x7e]{1,254}"
ROOM_ID_RE = re.compile(f"^{ROOM_ID}$")
EVENT_ID_RE = re.compile(r"^\$[\x21-\x7e]{1,254}$")
#: A localpart without ':' and a server name.
USER_ID_RE = re.compile(r"^@[\x21-\x39\x3b-\x7e]+:[\x21-\x7e]{1,254}$")
