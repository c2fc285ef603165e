"""Agent Chat: the light ``ac`` client (standard library only).

Keep this package cheap to import: hooks run ``ac notify`` before every tool call, so the hot
paths (``notify``, ``send``, ``listen``) import nothing they do not need.
"""

from __future__ import annotations

__version__ = "0.1.0"
