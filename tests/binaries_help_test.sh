#!/usr/bin/env bash
# --help of each binary users run lists that binary's own flags (abseil then exits 1).
set -euo pipefail
check() {  # check BINARY SOURCE FLAG...
  local binary=$1 source=$2
  shift 2
  local out
  out=$("$binary" --help 2>&1) || true
  grep -qF "Flags from $source:" <<<"$out" || { echo "$binary --help: no flags from $source"; exit 1; }
  for flag in "$@"; do
    grep -qF -- "$flag (" <<<"$out" || { echo "$binary --help does not list $flag"; exit 1; }
  done
}
check "$1" server/server_main.cc --port --model --backend --max_batch --max_queue --kv_cache_size
check "$2" server/generate_client.cc --server --prompt_ids --max_new_tokens
check "$3" tools/loadgen_main.cc --server --concurrency --rate --duration --num_requests --json
echo PASS
