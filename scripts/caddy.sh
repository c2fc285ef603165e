#!/usr/bin/env bash
# Install Caddy, the router of a Synapse worker-mode deployment (Caddyfile.workers), so that
# tests/test_workers.py can route real requests through it. Best effort, like tmux in
# agent-clis.sh: root with apt-get installs Debian's package (2.6 or newer is enough); anywhere
# else the router test skips, saying why. Idempotent and quick when Caddy is already there.
set -euo pipefail

if command -v caddy >/dev/null 2>&1; then
  echo "caddy: $(caddy version | head -1)"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "caddy: installing Debian's package (apt-get)"
  # The package's service is never started here (no init system); the tests run their own.
  if { apt-get install -y -qq --no-install-recommends caddy ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends caddy; }; } \
    >/dev/null 2>&1 </dev/null; then
    echo "caddy: $(caddy version | head -1)"
  else
    echo "caddy: could not install it; the router test will skip"
  fi
else
  echo "caddy: not found (install Caddy 2.6+); the router test will skip"
fi
