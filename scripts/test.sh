#!/usr/bin/env bash
# Run the test suite in a venv (created if needed) with the server and test extras installed.
#
#   ./scripts/test.sh [pytest args...]
#
# Environment: AGENT_CHAT_VENV (default ./.venv), PYTHON, AGENT_CHAT_TEST_POSTGRES (a PostgreSQL
# URL such as postgres://postgres@127.0.0.1:5432/postgres; without it PostgreSQL tests skip).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/_venv.sh
. "$REPO/scripts/_venv.sh"

dev_venv
exec "$VPY" -m pytest "$@"
