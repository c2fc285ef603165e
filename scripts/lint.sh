#!/usr/bin/env bash
# Style and type checks, as .ci/run runs them before the tests: ruff lint, ruff's formatter
# (check only; `ruff format .` applies it) and mypy. Non-zero on any finding.
#
#   ./scripts/lint.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/_venv.sh
. "$REPO/scripts/_venv.sh"

dev_venv
status=0
echo "== ruff check"
"$VENV/bin/ruff" check . || status=1
echo "== ruff format --check"
"$VENV/bin/ruff" format --check . || status=1
echo "== mypy"
"$VENV/bin/mypy" || status=1
exit "$status"
