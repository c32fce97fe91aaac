# shellcheck shell=bash
# Sourced by scripts that run int4kv_server in the background (demo.sh, loadgen_sweep.sh).
#
#   check_server_flags [server flags...]
#     what start_server refuses and the client_flags it sets, on their own: a script calls it
#     before building, so that a refused flag costs no build.
#   start_server BIN_DIR [server flags...]
#     starts BIN_DIR/server/int4kv_server on a free loopback port, logging to
#     $server_work/server.log, and waits for the port to open (the model may still be loading:
#     wait_for_serving next). Sets server_pid, server_work (a temporary folder),
#     server_address (127.0.0.1:PORT) and client_flags (--auth_token=... or
#     --auth_token_file=... when the server was given one: the clients need it too). Refuses
#     (exit 2) --tls_cert and --tls_key: the load generator speaks plaintext only; --port and
#     --port_file: it picks the port itself; and --flagfile, --fromenv and --tryfromenv, which
#     would hide flags from it (-flag spellings too). Exits the script, showing the server's
#     log, if the server dies or opens no port within 60 s.
#   wait_for_serving BIN_DIR TIMEOUT
#     waits until the server's health is SERVING (BIN_DIR/server/int4kv_generate
#     --wait_for_serving). Exits the script, showing the server's log, if the server dies
#     first or TIMEOUT passes.
#   stop_server
#     sends SIGTERM (drain) and waits; returns the server's exit status.
#
# An EXIT trap kills a server still running and removes server_work.

server_pid=""
waiter_pid=""  # wait_for_serving's client while it runs
server_work=$(mktemp -d)
server_address=""
client_flags=()

# True while process $1 runs. A child that exited but was not waited for yet still answers
# kill -0, so its state (Z) is read as well.
running() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ "$state" != Z ]]
}

server_alive() { [[ -n "$server_pid" ]] && running "$server_pid"; }

# Prints why the server is not serving, with its log, and exits the script.
fail_start() {
  echo "$(basename "$0"): $1; int4kv_server's log:" >&2
  cat "$server_work/server.log" >&2
  exit 1
}

cleanup_server() {
  if [[ -n "$waiter_pid" ]] && running "$waiter_pid"; then
    kill -KILL "$waiter_pid" 2>/dev/null || true
  fi
  if server_alive; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$server_work"
}
trap cleanup_server EXIT

check_server_flags() {
  local args=("$@") i arg
  for ((i = 0; i < ${#args[@]}; ++i)); do
    arg=${args[i]}
    [[ "$arg" == -[!-]* ]] && arg=-$arg # Abseil takes -flag as --flag
    case $arg in
      --auth_token=*) client_flags=(--auth_token="${arg#--auth_token=}") ;;
      --auth_token) client_flags=(--auth_token="${args[i + 1]:-}") ;;
      --auth_token_file=*) client_flags=(--auth_token_file="${arg#--auth_token_file=}") ;;
      --auth_token_file) client_flags=(--auth_token_file="${args[i + 1]:-}") ;;
      --tls_cert | --tls_cert=* | --tls_key | --tls_key=*)
        echo "$(basename "$0"): ${arg%%=*} is not supported here: int4kv_loadgen and" \
          "these scripts' clients speak plaintext; run int4kv_server directly for TLS" >&2
        exit 2
        ;;
      --port | --port=* | --port_file | --port_file=*)
        echo "$(basename "$0"): ${arg%%=*} is not supported here: the script picks a free" \
          "loopback port and reads it from a port file of its own" >&2
        exit 2
        ;;
      --flagfile | --flagfile=* | --fromenv | --fromenv=* | --tryfromenv | --tryfromenv=*)
        echo "$(basename "$0"): ${arg%%=*} is not supported here: give the server's flags on" \
          "the command line, so that the script sees them" >&2
        exit 2
        ;;
    esac
  done
}

start_server() {
  local bin_dir=$1
  shift
  check_server_flags "$@"
  # The script's own address flags last: Abseil takes a flag's last value.
  "$bin_dir/server/int4kv_server" "$@" --port=127.0.0.1:0 --port_file="$server_work/port" \
    >"$server_work/server.log" 2>&1 &
  server_pid=$!
  # The port file appears as soon as the port is open (before the model has loaded).
  for _ in $(seq 600); do
    [[ -s "$server_work/port" ]] && break
    server_alive || fail_start "int4kv_server exited during start-up"
    sleep 0.1
  done
  [[ -s "$server_work/port" ]] || fail_start "int4kv_server opened no port within 60 s"
  server_address="127.0.0.1:$(cat "$server_work/port")"
}

wait_for_serving() {
  local bin_dir=$1 timeout=$2 status=0
  "$bin_dir/server/int4kv_generate" --server="$server_address" --wait_for_serving="$timeout" \
    --info "${client_flags[@]}" >/dev/null 2>"$server_work/wait.log" &
  waiter_pid=$!
  while running "$waiter_pid"; do
    if ! server_alive; then
      kill "$waiter_pid" 2>/dev/null || true
      wait "$waiter_pid" 2>/dev/null || true
      waiter_pid=""
      fail_start "int4kv_server exited during start-up"
    fi
    sleep 0.1
  done
  wait "$waiter_pid" || status=$?
  waiter_pid=""
  ((status == 0)) || fail_start "not SERVING within $timeout ($(cat "$server_work/wait.log"))"
}

stop_server() {
  local status=0
  kill -TERM "$server_pid"
  wait "$server_pid" || status=$?
  server_pid=""
  return "$status"
}
