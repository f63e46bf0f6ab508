#!/usr/bin/env bash
# Installs vegeta, the open-loop HTTP load generator `npm run bench` uses for its latency runs
# (docs/decisions/0026-open-loop-generator.md), with `go install` from the Go module proxy into
# infra/vegeta/target/bin. Idempotent: does nothing when that binary reports the pinned version.
# Needs a Go toolchain (1.20 or newer) on PATH; installs none. Starts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
module=github.com/tsenart/vegeta/v12
version=v12.13.0
bin=infra/vegeta/target/bin
marker="$bin/.version"
if [ -x "$bin/vegeta" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$module@$version" ]; then exit 0; fi
if ! command -v go >/dev/null 2>&1; then
  echo '{"msg":"vegeta needs a Go toolchain to build it: install Go (https://go.dev/dl/) and put it on PATH"}' >&2
  exit 1
fi
echo "{\"msg\":\"installing vegeta with go install\",\"module\":\"$module\",\"version\":\"$version\",\"dir\":\"$bin\"}"
rm -rf "$bin"
mkdir -p "$bin"
log=infra/vegeta/target/install.log
if ! GOBIN="$PWD/$bin" go install "$module@$version" >"$log" 2>&1; then
  cat "$log" >&2
  echo '{"msg":"installing vegeta failed","log":"'"$log"'"}' >&2
  exit 1
fi
"$bin/vegeta" -version >/dev/null
echo "$module@$version" > "$marker"
