"""``python -m agent_chat_server`` (used by ``start`` to launch the detached supervisor)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
