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
# A hang must end as a failure, not as a run that never reports: past the limit the run is
# stopped and counted from what it reported so far, plus one failure for what did not finish.
limit_s="${FG_TEST_LIMIT_S:-3600}"
( sleep "$limit_s" && touch "$FG_TEST_TMP/timed-out" && kill -TERM -- "-$runner" ) 2>/dev/null &
watchdog=$!
disown "$watchdog"
cleanup() {
  kill -TERM -- "-$watchdog" 2>/dev/null
  kill -TERM -- "-$runner" 2>/dev/null
  sleep 0.5
  kill -KILL -- "-$runner" 2>/dev/null
  pkill -KILL -f "$FG_TEST_TMP" 2>/dev/null
  rm -rf "$FG_TEST_TMP"
}
trap cleanup EXIT
wait "$runner"
status=$?

if [ -e "$FG_TEST_TMP/timed-out" ]; then
  # Leaf test points of the partial TAP (a describe block's point carries "type: 'suite'").
  read -r passed failed skipped < <(awk '
    /^ *(not )?ok [0-9]+ / { pend = ($0 ~ /^ *not ok/) ? "f" : ($0 ~ /# SKIP/ ? "s" : "p"); suite = 0; next }
    /^ *type: .suite.$/ { suite = 1; next }
    /^ *\.\.\.$/ { if (pend != "" && !suite) n[pend]++; pend = ""; next }
    END { printf "%d %d %d\n", n["p"], n["f"], n["s"] }' "$results")
  echo
  echo "the test run did not finish within ${limit_s} s (FG_TEST_LIMIT_S) and was stopped: the output above ends where it hung"
  echo "${passed} passed, $(( failed + 1 )) failed, ${skipped} skipped"
  exit 1
fi

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
