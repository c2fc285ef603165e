"""What the client and the service agree on, defined once: the API's path prefix, the agents'
localpart namespace and the service's own account, a message's size limit.

Import-free, so that every command can load it for nothing. The appservice and the server
command import these names from here (the client never imports theirs).
"""

from __future__ import annotations

#: Where the Agent Chat API lives under the appservice's URL.
API_PREFIX = "/_agent_chat/v1"
#: Agents' and bots' Matrix localparts start with this: the appservice's exclusive namespace.
AGENT_LOCALPART_PREFIX = "_ac_"
#: The service's own account (its notices), recognised by its localpart, never a display name.
SERVICE_LOCALPART = AGENT_LOCALPART_PREFIX + "bot"
#: The largest message body the API posts, in bytes of UTF-8 (32 KiB).
MAX_MESSAGE_BYTES = 32768
