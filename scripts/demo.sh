#!/usr/bin/env bash
# The server's main job in one command: builds int4kv_server and int4kv_generate, starts the
# server on the shipped stories260K model in the background, waits for its health to be
# SERVING, streams one generation to the terminal, then stops the server with SIGTERM (drain).
#
#   scripts/demo.sh                     # backend auto: cuda when a GPU is visible, else cpu
#   scripts/demo.sh --backend=cuda      # any further flags go to int4kv_server
#
# Environment: PROMPT_IDS (default 1,403,261,378,5,30,271) and MAX_NEW_TOKENS (default 48).
set -euo pipefail
cd "$(dirname "$0")/.."

prompt_ids=${PROMPT_IDS:-1,403,261,378,5,30,271}
max_new_tokens=${MAX_NEW_TOKENS:-48}

bazel build //server:int4kv_server //server:int4kv_generate
bin=$(bazel info bazel-bin 2>/dev/null)

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/server/int4kv_server" --port=127.0.0.1:0 --port_file="$work/port" "$@" \
  >"$work/server.log" 2>&1 &
server_pid=$!

# The port file appears as soon as the port is open (before the model has loaded).
for _ in $(seq 600); do
  [[ -s "$work/port" ]] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "demo: int4kv_server exited during start-up:" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
[[ -s "$work/port" ]] || { echo "demo: no port after 60 s" >&2; cat "$work/server.log" >&2; exit 1; }
address="127.0.0.1:$(cat "$work/port")"

# Wait for health SERVING (the model loads after the port opens), then show the start-up log.
"$bin/server/int4kv_generate" --server="$address" --wait_for_serving=120s --info >/dev/null
shown=$(wc -l <"$work/server.log")
echo "== int4kv_server${*:+ $*} (start-up log)"
cat "$work/server.log"

echo "== int4kv_generate --server=$address --prompt_ids=$prompt_ids --max_new_tokens=$max_new_tokens"
status=0
"$bin/server/int4kv_generate" --server="$address" --prompt_ids="$prompt_ids" \
  --max_new_tokens="$max_new_tokens" --request_id=demo || status=$?

echo "== SIGTERM to int4kv_server (drain log)"
kill -TERM "$server_pid"
wait "$server_pid" || status=$?
server_pid=""
tail -n +"$((shown + 1))" "$work/server.log"
exit "$status"
