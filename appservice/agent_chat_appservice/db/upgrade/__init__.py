"""Schema migrations, one module per version (``vNN_description.py``)."""

from mautrix.util.async_db import UpgradeTable

upgrade_table = UpgradeTable()

from . import (
    v01_initial,  # noqa: F401  (registers itself on upgrade_table)
    v02_humans_and_webhooks,  # noqa: F401
    v03_unread_by_room,  # noqa: F401
    v04_room_counts,  # noqa: F401
)
