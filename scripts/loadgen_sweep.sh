#!/usr/bin/env bash
# Loadgen figures in one command: starts int4kv_server with the given flags on a free loopback
# port, waits for SERVING, runs int4kv_loadgen (closed loop) once per concurrency, prints each
# report, then stops the server with SIGTERM and checks that it exits 0.
#
#   scripts/loadgen_sweep.sh --backend=cpu --max_batch=256 --max_queue=1024
#   scripts/loadgen_sweep.sh --backend=cuda --model=llama8b:4 --max_batch=256 --max_queue=1024 \
#       --max_seq_len=2048
#
# Environment:
#   CONCURRENCY    concurrencies to run, in order (default "1 16 64 256")
#   DURATION       sending time per concurrency (default 15s)
#   LOADGEN_FLAGS  further int4kv_loadgen flags (default "--prompt_len=128 --output_len=128")
#   JSON_DIR       if set, each run's JSON goes to $JSON_DIR/loadgen_c<N>.json
#   BIN_DIR        folder holding server/int4kv_server, server/int4kv_generate and
#                  tools/int4kv_loadgen (default: built here with bazel -c opt)
set -euo pipefail
# Relative paths are the caller's: JSON_DIR and BIN_DIR here, and those in the flags
# (--model, --auth_token_file), which the server and its clients look for there first.
export BUILD_WORKING_DIRECTORY=${BUILD_WORKING_DIRECTORY:-$PWD}
[[ -n "${JSON_DIR:-}" && "$JSON_DIR" != /* ]] && JSON_DIR=$PWD/$JSON_DIR
[[ -n "${BIN_DIR:-}" && "$BIN_DIR" != /* ]] && BIN_DIR=$PWD/$BIN_DIR
cd "$(dirname "$0")/.."

concurrencies=${CONCURRENCY:-1 16 64 256}
duration=${DURATION:-15s}
loadgen_flags=${LOADGEN_FLAGS:---prompt_len=128 --output_len=128}

# shellcheck source=scripts/lib/server_process.sh
source scripts/lib/server_process.sh
check_server_flags "$@"  # before the build: a refused flag costs none
if [[ -z "${BIN_DIR:-}" ]]; then
  bazel build -c opt //server:int4kv_server //server:int4kv_generate //tools:int4kv_loadgen
  BIN_DIR=$(bazel info -c opt bazel-bin 2>/dev/null)
fi
start_server "$BIN_DIR" "$@"
address=$server_address
wait_for_serving "$BIN_DIR" 300s
echo "== int4kv_server $* (start-up log)"
cat "$server_work/server.log"

[[ -n "${JSON_DIR:-}" ]] && mkdir -p "$JSON_DIR"
status=0
for c in $concurrencies; do
  json=()
  if [[ -n "${JSON_DIR:-}" ]]; then
    rm -f "$JSON_DIR/loadgen_c$c.json" # a refused run must not leave an earlier sweep's figures
    json=(--json="$JSON_DIR/loadgen_c$c.json")
  fi
  echo "== int4kv_loadgen --concurrency=$c --duration=$duration $loadgen_flags"
  # shellcheck disable=SC2086  # LOADGEN_FLAGS is a list of flags
  "$BIN_DIR/tools/int4kv_loadgen" --server="$address" --concurrency="$c" \
    --duration="$duration" --progress=false $loadgen_flags "${json[@]}" "${client_flags[@]}" ||
    status=$?
done

echo "== SIGTERM to int4kv_server"
server_status=0
stop_server || server_status=$?
echo "int4kv_server exited with status $server_status"
((status == 0 && server_status == 0))
