"""Files ``ac setup`` installs: the hook scripts, skills and Gemini CLI commands (package data).

Nothing here is imported on a hot path; the directory is located through ``__file__``.
"""

from __future__ import annotations
