"""The upgrade table every migration registers itself on (apart, so they can import it)."""

from mautrix.util.async_db import UpgradeTable

upgrade_table = UpgradeTable()
