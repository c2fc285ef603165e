"""Schema migrations, one module per version (``vNN_description.py``), each registering
itself on ``upgrade_table`` when imported."""

from . import (
    v01_initial,  # noqa: F401
    v02_humans_and_webhooks,  # noqa: F401
    v03_unread_by_room,  # noqa: F401
    v04_room_counts,  # noqa: F401
    v05_sealed_matrix_tokens,  # noqa: F401
    v06_threads,  # noqa: F401
    v07_claims,  # noqa: F401
    v08_send_rate,  # noqa: F401
    v09_delivery_stages,  # noqa: F401
    v10_retention_indexes,  # noqa: F401
    v11_invite_tokens,  # noqa: F401
    v12_session_waiter,  # noqa: F401
)
from .table import upgrade_table

__all__ = ["upgrade_table"]
