"""The upgrade table every migration registers itself on (apart, so they can import it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from mautrix.util.async_db import UpgradeTable

upgrade_table = UpgradeTable()

Upgrade = TypeVar("Upgrade", bound=Callable[..., Awaitable[None]])


def register(description: str) -> Callable[[Upgrade], Upgrade]:
    """``@upgrade_table.register(description=...)`` with a type: mautrix annotates it as
    returning an upgrade *or* a decorator, which a type checker cannot apply."""

    def decorate(upgrade: Upgrade) -> Upgrade:
        upgrade_table.register(upgrade, description=description)
        return upgrade

    return decorate
