"""Storage: one module per table (maubot style), migrations in ``upgrade/``.

Every statement of the appservice lives in these modules (see ``base.py`` for the rules on
connections), so a schema change touches only ``db/``.
"""

from __future__ import annotations

from .agent_session import AgentSession
from .base import bind as init
from .base import create, now_ms, run_transaction, transaction, use_key
from .claim import Claim
from .client_send import ClientSend
from .hs_transaction import HSTransaction
from .identity import Identity
from .ledger import Ledger, Unread
from .member import Member
from .message import Message
from .room import Channel, DirectChat, Room
from .send_rate import SendRate
from .stage import Recipient, Stage
from .upgrade import upgrade_table
from .webhook import Webhook

__all__ = [
    "AgentSession",
    "Channel",
    "Claim",
    "ClientSend",
    "DirectChat",
    "HSTransaction",
    "Identity",
    "Ledger",
    "Member",
    "Message",
    "Recipient",
    "Room",
    "SendRate",
    "Stage",
    "Unread",
    "Webhook",
    "create",
    "init",
    "now_ms",
    "run_transaction",
    "transaction",
    "upgrade_table",
    "use_key",
]
