#!/usr/bin/env bash
# Installs Feast's Python feature server for the benchmark's "feast" baseline
# (loadtest/baselines/feast/): a virtual environment under infra/feast/venv
# with feast[redis] pinned, from PyPI. Idempotent: does nothing when the venv
# already holds the pinned version. Needs Python 3.10+ with the venv module.
# Starts nothing. Prints the venv's python on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.67.0
venv=infra/feast/venv
marker="$venv/.feast-version"
if [ -x "$venv/bin/python" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$version" ]; then
  echo "$PWD/$venv/bin/python"
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo '{"msg":"feast needs Python 3 (3.10 or newer) with venv"}' >&2
  exit 1
fi
echo "{\"msg\":\"installing feast[redis] into a virtual environment\",\"version\":\"$version\",\"dir\":\"$venv\"}" >&2
rm -rf "$venv"
mkdir -p infra/feast
python3 -m venv "$venv"
log=infra/feast/install.log
if ! { "$venv/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip &&
       "$venv/bin/python" -m pip install --disable-pip-version-check -q "feast[redis]==$version"; } >"$log" 2>&1; then
  tail -40 "$log" >&2
  echo "{\"msg\":\"installing feast failed\",\"log\":\"$log\"}" >&2
  exit 1
fi
"$venv/bin/python" -c 'import feast, redis' >/dev/null
echo "$version" > "$marker"
echo "$PWD/$venv/bin/python"
