#!/usr/bin/env bash
# Installs the npm dependencies from the lockfile when they are missing or older than it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo '{"msg":"installing npm dependencies (npm ci)"}'
  npm ci --no-audit --no-fund --loglevel=error
fi
