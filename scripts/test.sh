#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what it needs (npm
# dependencies, Debian's redis-server), builds, runs every test file with
# node's test runner, and stops every server the tests started, also when
# they fail. Prints "N passed, N failed, N skipped" last (cancelled tests count as failed).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh || exit 1
bash scripts/ensure-redis.sh || exit 1
bash scripts/ensure-kafka.sh || exit 1
npm run --silent build || exit 1

export FG_TEST_TMP
FG_TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/fg-test.XXXXXX")
export LOG_LEVEL="${LOG_LEVEL:-warn}"
results="$FG_TEST_TMP/results.tap"

set -m  # the test run gets its own process group, so cleanup can stop all it spawned
if [ "$#" -gt 0 ]; then files=("$@"); else mapfile -t files < <(find dist/test -name '*.test.js' | sort); fi
node --test --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$results" "${files[@]}" &
runner=$!
cleanup() {
  kill -TERM -- "-$runner" 2>/dev/null
  sleep 0.5
  kill -KILL -- "-$runner" 2>/dev/null
  pkill -KILL -f "$FG_TEST_TMP" 2>/dev/null
  rm -rf "$FG_TEST_TMP"
}
trap cleanup EXIT
wait "$runner"
status=$?

passed=$(grep -E '^# pass ' "$results" | tail -1 | awk '{print $3}')
failed=$(grep -E '^# fail ' "$results" | tail -1 | awk '{print $3}')
# A test whose hook (before/after) failed is "cancelled" by node's runner: it did not pass, so it counts as failed.
cancelled=$(grep -E '^# cancelled ' "$results" | tail -1 | awk '{print $3}')
failed=$(( ${failed:-0} + ${cancelled:-0} ))
skipped=$(grep -E '^# skipped ' "$results" | tail -1 | awk '{print $3}')
echo
echo "${passed:-0} passed, ${failed} failed, ${skipped:-0} skipped"
if [ -z "$passed" ] || [ "$passed" = "0" ]; then status=1; fi
exit "$status"
