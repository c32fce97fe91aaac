#!/usr/bin/env bash
# scripts/lib/server_process.sh, the server start and stop of demo.sh and loadgen_sweep.sh,
# against a stand-in int4kv_server that records its arguments: a flag the scripts refuse stops
# them (exit 2, naming the flag) before any server starts; other flags reach the server, the
# script's own port flags last; an auth flag goes to the clients too; stop_server returns the
# server's exit status.
set -euo pipefail
lib=scripts/lib/server_process.sh
[[ -f $lib ]] || { echo "server_process_test: $lib is missing" >&2; exit 1; }
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
mkdir -p "$bin/server"
cat >"$bin/server/int4kv_server" <<'SERVER'
#!/usr/bin/env bash
echo "$*" >"$(dirname "$0")/../started"
for arg; do
  case $arg in --port_file=*) echo 4242 >"${arg#--port_file=}" ;; esac
done
trap 'exit 3' TERM
while :; do sleep 0.05; done
SERVER
chmod +x "$bin/server/int4kv_server"

fail() { echo "server_process_test: $*" >&2; exit 1; }

for flag in --tls_cert=a.pem --tls_key --port=1 --port_file=p --flagfile=f --fromenv=x \
  --tryfromenv=y -tls_cert=a.pem; do
  rm -f "$bin/started"
  status=0
  # shellcheck source=scripts/lib/server_process.sh
  output=$( (source "$lib" && start_server "$bin" --max_batch=4 "$flag" key.pem) 2>&1) || status=$?
  ((status == 2)) || fail "$flag: exit status $status, not 2: $output"
  name=${flag%%=*}
  [[ $name == --* ]] || name=-$name  # the message names a -flag spelling as --flag
  grep -qF -- "$name is not supported here" <<<"$output" || fail "$flag: $output"
  [[ ! -e $bin/started ]] || fail "$flag: the server was started"
done

(
  # shellcheck source=scripts/lib/server_process.sh
  source "$lib"
  start_server "$bin" --max_batch=4 --auth_token=s3cret
  [[ $server_address == 127.0.0.1:4242 ]] || fail "address $server_address"
  [[ "${client_flags[*]}" == --auth_token=s3cret ]] || fail "client flags ${client_flags[*]}"
  started=$(cat "$bin/started")
  [[ $started == "--max_batch=4 --auth_token=s3cret --port=127.0.0.1:0 --port_file="*/port ]] ||
    fail "server arguments: $started"
  status=0
  stop_server || status=$?
  ((status == 3)) || fail "stop_server returned $status, not the server's 3"
)
echo "server_process_test: passed"
