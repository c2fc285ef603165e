"""Types of the JSON the client reads and writes, for the type checker only.

Never imported at run time (``typing`` alone costs milliseconds of a hook's budget): modules
import it under ``if TYPE_CHECKING:`` and use the names in annotations, which
``from __future__ import annotations`` leaves unevaluated.

What comes from the server or from a file is :data:`JSONObject` (``dict[str, object]``) and is
checked field by field where it is used (``isinstance``): a server of another version, a proxy
or a hand-edited file may send anything. TypedDicts describe what the client itself builds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

#: A JSON object as parsed, its values not yet checked.
JSONObject = dict[str, object]


class RequestOptions(TypedDict, total=False):
    """The optional arguments of ``api.Client.raw``, which ``Client.call`` passes on."""

    query: Mapping[str, object] | None
    body: Mapping[str, object] | None
    auth: bool
    timeout: float | None


#: One room's unread count as the renderers take it: (label, count, urgent).
UnreadEntry = tuple[str, int, bool]


class CredentialRecord(TypedDict):
    """One identity in ``credentials.json`` (``servers.<url>.identities.<key>``)."""

    user_id: object
    nick: object
    kind: object
    token: str
    created_at: int


class UnreadCount(TypedDict):
    """A room's entry in ``ac notify --json`` and in ``state.json``."""

    count: int
    urgent: bool


class IdentityRecord(TypedDict):
    """An identity as ``ac whoami --json`` shows it."""

    nick: str | None
    user_id: str | None
    kind: str | None


class OtherIdentity(IdentityRecord):
    """Another identity stored for the server, and whether it is the default."""

    default: bool


class WhoamiReport(TypedDict):
    """``ac whoami --json``."""

    #: The identity in use; ``{"token": "AGENT_CHAT_TOKEN"}`` for an environment token.
    identity: IdentityRecord | dict[str, str] | None
    source: str
    registered: bool
    wanted_nick: str | None
    server: str
    server_source: str
    default: IdentityRecord | None
    others: list[OtherIdentity]
