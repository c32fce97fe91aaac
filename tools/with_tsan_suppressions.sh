#!/usr/bin/env bash
# Test wrapper for --config=tsan (.bazelrc: --run_under): points ThreadSanitizer at
# tools/tsan_suppressions.txt by absolute path, then runs the test with its arguments.
# TSAN_OPTIONS cannot name the file directly: tests run in a sandbox whose runfiles hold only
# their own data, and .bazelrc values are not expanded.
set -euo pipefail
self_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Under `bazel test` the wrapper sits inside the test's runfiles tree next to its data; run by
# hand it has a runfiles tree of its own.
suppressions="${self_dir}/tsan_suppressions.txt"
if [[ ! -f "${suppressions}" ]]; then
  suppressions="${self_dir}/with_tsan_suppressions.runfiles/int4kv/tools/tsan_suppressions.txt"
fi
if [[ ! -f "${suppressions}" ]]; then
  echo "with_tsan_suppressions: ${suppressions} is missing" >&2
  exit 1
fi
export TSAN_OPTIONS="suppressions=${suppressions}:halt_on_error=1:second_deadlock_stack=1${TSAN_OPTIONS:+:${TSAN_OPTIONS}}"
exec "$@"
