# Sourced by scripts that run int4kv_server in the background (demo.sh, loadgen_sweep.sh).
#
#   start_server BIN_DIR [server flags...]
#     starts BIN_DIR/server/int4kv_server on a free loopback port, logging to
#     $server_work/server.log, and waits for the port to open (the model may still be loading:
#     wait for SERVING with int4kv_generate --wait_for_serving). Sets server_pid, server_work
#     (a temporary folder) and server_address (127.0.0.1:PORT). Exits the script if the server
#     dies or opens no port within 60 s.
#   stop_server
#     sends SIGTERM (drain) and waits; returns the server's exit status.
#
# An EXIT trap kills a server still running and removes server_work.

server_pid=""
server_work=$(mktemp -d)
server_address=""

cleanup_server() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$server_work"
}
trap cleanup_server EXIT

start_server() {
  local bin_dir=$1
  shift
  "$bin_dir/server/int4kv_server" --port=127.0.0.1:0 --port_file="$server_work/port" "$@" \
    >"$server_work/server.log" 2>&1 &
  server_pid=$!
  # The port file appears as soon as the port is open (before the model has loaded).
  for _ in $(seq 600); do
    [[ -s "$server_work/port" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "$(basename "$0"): int4kv_server exited during start-up:" >&2
      cat "$server_work/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  if [[ ! -s "$server_work/port" ]]; then
    echo "$(basename "$0"): int4kv_server opened no port within 60 s" >&2
    cat "$server_work/server.log" >&2
    exit 1
  fi
  server_address="127.0.0.1:$(cat "$server_work/port")"
}

stop_server() {
  local status=0
  kill -TERM "$server_pid"
  wait "$server_pid" || status=$?
  server_pid=""
  return "$status"
}
