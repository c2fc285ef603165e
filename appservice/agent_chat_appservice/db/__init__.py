"""Storage: one module per table (maubot style), migrations in ``upgrade/``."""

from __future__ import annotations

from mautrix.util.async_db import Database

from .client_send import ClientSend
from .hs_transaction import HSTransaction
from .identity import Identity
from .ledger import Ledger
from .member import Member
from .message import Message
from .room import DirectChat, Room
from .upgrade import upgrade_table
from .webhook import Webhook

ALL = (HSTransaction, ClientSend, Identity, Ledger, Member, Message, Room, DirectChat, Webhook)


def init(db: Database, read: Database | None = None) -> None:
    """Bind every table class to the database: ``db`` for writes (and reads that must see a
    write in progress), ``read`` for plain reads (defaults to ``db``)."""
    for table in ALL:
        table.db = db
        table.read_db = read or db


__all__ = [
    "ClientSend",
    "DirectChat",
    "HSTransaction",
    "Identity",
    "Ledger",
    "Member",
    "Message",
    "Room",
    "Webhook",
    "init",
    "upgrade_table",
]
