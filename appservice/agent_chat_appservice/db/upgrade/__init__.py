"""Schema migrations, one module per version (``vNN_description.py``)."""

from mautrix.util.async_db import UpgradeTable

upgrade_table = UpgradeTable()

from . import v01_initial  # noqa: E402,F401  (registers itself on upgrade_table)
from . import v02_humans_and_webhooks  # noqa: E402,F401
from . import v03_unread_by_room  # noqa: E402,F401
from . import v04_room_counts  # noqa: E402,F401
