#!/usr/bin/env bash
# --help of each binary users run lists that binary's own flags (abseil then exits 1), and
# each refuses a word that is not a flag.
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
# A word that is not a flag is refused (exit 2, naming it) before anything runs: dropped, it
# would leave the user's setting unmade (`--ignore_eos false` runs with ignore_eos true).
refuses_stray_word() {  # refuses_stray_word BINARY FLAG...
  local binary=$1
  shift
  local out rc
  out=$("$binary" "$@" 2>&1) && rc=0 || rc=$?
  ((rc == 2)) || { echo "$binary $*: exit status $rc, want 2: $out"; exit 1; }
  grep -qF "unexpected argument 'false'" <<<"$out" || { echo "$binary $*: $out"; exit 1; }
}
refuses_stray_word "$1" --cuda_graphs false
refuses_stray_word "$2" --ignore_eos false
refuses_stray_word "$3" --ignore_eos false
check "$1" server/server_main.cc --port --model --backend --max_batch --max_queue --kv_cache_size
check "$2" server/generate_client.cc --server --prompt_ids --max_new_tokens
check "$3" tools/loadgen_main.cc --server --concurrency --rate --duration --num_requests --json
echo PASS
