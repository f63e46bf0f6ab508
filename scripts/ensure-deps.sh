#!/usr/bin/env bash
# Installs the npm dependencies from the lockfile when they are missing or were
# installed from another lockfile. Compares the lockfile's checksum, not file
# times: a fresh checkout (or a git worktree) has a new lockfile mtime without
# any change in what it pins, and `npm ci` would needlessly wipe node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."
sum=$(sha256sum package-lock.json | cut -d' ' -f1)
marker=node_modules/.installed-lockfile-sha256
if [ ! -d node_modules ] || [ ! -f "$marker" ] || [ "$(cat "$marker")" != "$sum" ]; then
  echo '{"msg":"installing npm dependencies (npm ci)"}'
  npm ci --no-audit --no-fund --loglevel=error
  echo "$sum" > "$marker"
fi
