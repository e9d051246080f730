#!/usr/bin/env bash
# tests/run_and_expect.sh PATTERN COMMAND [ARGS...]: runs the command, prints its output, and
# succeeds only when it exits 0 and its output has a line matching the extended regex PATTERN
# (ctest's PASS_REGULAR_EXPRESSION alone would ignore the exit code).
set -uo pipefail
pattern=$1
shift
output=$("$@" 2>&1)
code=$?
printf '%s\n' "$output"
if ((code != 0)); then
  echo "run_and_expect: exit code $code"
  exit 1
fi
grep -Eq -- "$pattern" <<<"$output" || { echo "run_and_expect: no line matches: $pattern"; exit 1; }
