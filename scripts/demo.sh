#!/usr/bin/env bash
# The server's main job in one command: builds int4kv_server and int4kv_generate, starts the
# server on the shipped stories260K model in the background, waits for its health to be
# SERVING, streams one generation to the terminal, then stops the server with SIGTERM (drain).
#
#   scripts/demo.sh                     # backend auto: cuda when a GPU is visible, else cpu
#   scripts/demo.sh --backend=cuda      # any further flags go to int4kv_server
#
# Environment: PROMPT_IDS (default 1,403,261,378,5,30,271), MAX_NEW_TOKENS (default 48) and
# BIN_DIR (a folder holding server/int4kv_server and server/int4kv_generate; default: built
# here with bazel).
set -euo pipefail
# Relative paths in the flags (--model, --auth_token_file) are the caller's: the server and
# its clients look for them there first, as under `bazel run`.
export BUILD_WORKING_DIRECTORY=${BUILD_WORKING_DIRECTORY:-$PWD}
[[ -n "${BIN_DIR:-}" && "$BIN_DIR" != /* ]] && BIN_DIR=$PWD/$BIN_DIR
cd "$(dirname "$0")/.."

prompt_ids=${PROMPT_IDS:-1,403,261,378,5,30,271}
max_new_tokens=${MAX_NEW_TOKENS:-48}

# shellcheck source=scripts/lib/server_process.sh
source scripts/lib/server_process.sh
check_server_flags "$@"  # before the build: a refused flag costs none
if [[ -z "${BIN_DIR:-}" ]]; then
  bazel build //server:int4kv_server //server:int4kv_generate
  BIN_DIR=$(bazel info bazel-bin 2>/dev/null)
fi
bin=$BIN_DIR
start_server "$bin" "$@"
address=$server_address

# Wait for health SERVING (the model loads after the port opens), then show the start-up log.
wait_for_serving "$bin" 120s
shown=$(wc -l <"$server_work/server.log")
echo "== int4kv_server${*:+ $*} (start-up log)"
cat "$server_work/server.log"

echo "== int4kv_generate --server=$address --prompt_ids=$prompt_ids --max_new_tokens=$max_new_tokens"
status=0
"$bin/server/int4kv_generate" --server="$address" --prompt_ids="$prompt_ids" \
  --max_new_tokens="$max_new_tokens" --request_id=demo "${client_flags[@]}" || status=$?

echo "== SIGTERM to int4kv_server (drain log)"
stop_server || status=$?
tail -n +"$((shown + 1))" "$server_work/server.log"
exit "$status"
