#!/usr/bin/env bash
# --help of each binary users run lists that binary's own flags (abseil then exits 1), every
# binary's --help says what it does, and every binary that takes flags refuses a word that is
# not a flag.
# Arguments: tools/expect_refusal.sh, int4kv_server, int4kv_generate, int4kv_loadgen,
# generate, then the other binaries that take flags.
set -uo pipefail
source "$1" || exit 1  # tools/expect_refusal.sh
declare -F expect_refusal > /dev/null || { echo "expect_refusal not defined by $1" >&2; exit 1; }
shift
check() {  # check BINARY SOURCE FLAG...
  local binary=$1 source=$2
  shift 2
  local out
  out=$("$binary" --help 2>&1)
  grep -qF "Flags from $source:" <<<"$out" || { echo "$binary --help: no flags from $source"; exit 1; }
  for flag in "$@"; do
    grep -qF -- "$flag (" <<<"$out" || { echo "$binary --help does not list $flag"; exit 1; }
  done
}
check "$1" server/server_main.cc --port --model --backend --max_batch --max_queue --kv_cache_size
check "$2" server/generate_client.cc --server --prompt_ids --max_new_tokens
check "$3" tools/loadgen_main.cc --server --concurrency --rate --duration --num_requests --json
check "$4" server/generate_main.cc --model --prompt --max_new_tokens
# Every binary's --help says what it does (no Abseil warning that it has no usage message).
for binary in "$@"; do
  out=$("$binary" --help 2>&1)
  if grep -qF "SetProgramUsageMessage() never called" <<<"$out"; then
    echo "$binary --help has no usage message"
    exit 1
  fi
  grep -qF "Example: " <<<"$out" || { echo "$binary --help gives no example"; exit 1; }
done
# A word that is not a flag is refused (exit 2, naming it) before anything runs: dropped, it
# would leave the user's setting unmade (`--ignore_eos false` runs with ignore_eos true).
for tool in "$@"; do
  expect_refusal "unexpected argument 'false'" false
done
tool=$2 expect_refusal "unexpected argument 'false'" --ignore_eos false
tool=$3 expect_refusal "unexpected argument 'false'" --ignore_eos false
# Values refused before anything runs, named as the flag: an id the server would refuse (one
# that is not UTF-8 would reach it as an empty INTERNAL error), and the in-process generator's
# settings that the engine refuses.
tool=$2 expect_refusal "--request_id byte 0 = 255 is invalid" --prompt_ids=1 --request_id=$'\xff'
tool=$4 expect_refusal "max_new_tokens" --max_new_tokens=0
tool=$4 expect_refusal "top_p" --top_p=2
tool=$4 expect_refusal "no_such_model.bin" --model=no_such_model.bin
echo PASS
