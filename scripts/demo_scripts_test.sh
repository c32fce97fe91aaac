#!/usr/bin/env bash
# demo.sh and loadgen_sweep.sh, run as the README gives them, against the real int4kv_server,
# int4kv_generate and int4kv_loadgen (BIN_DIR) on the CPU: each starts its server, does its
# work and stops the server with exit status 0. A flag renamed in a binary that a script
# passes fails here.
set -euo pipefail
server=$(realpath "$1") generate=$(realpath "$2") loadgen=$(realpath "$3")
work=${TEST_TMPDIR:-$(mktemp -d)}
bin=$work/bin
mkdir -p "$bin/server" "$bin/tools"
ln -sf "$server" "$bin/server/int4kv_server"
ln -sf "$generate" "$bin/server/int4kv_generate"
ln -sf "$loadgen" "$bin/tools/int4kv_loadgen"

out=$(BIN_DIR=$bin MAX_NEW_TOKENS=6 scripts/demo.sh --backend=cpu 2>&1) ||
  { echo "demo.sh failed:"; echo "$out"; exit 1; }
for expected in "== int4kv_server --backend=cpu (start-up log)" "finish: length" \
  "usage: 7 prompt tokens, 6 generated tokens" "SIGTERM: draining" "engine stopped"; do
  grep -qF "$expected" <<<"$out" || { echo "demo.sh: no '$expected' in:"; echo "$out"; exit 1; }
done

out=$(BIN_DIR=$bin CONCURRENCY="1 4" DURATION=1s JSON_DIR=$work/json \
  LOADGEN_FLAGS="--prompt_len=4 --output_len=4" scripts/loadgen_sweep.sh --backend=cpu 2>&1) ||
  { echo "loadgen_sweep.sh failed:"; echo "$out"; exit 1; }
for c in 1 4; do
  grep -qF "== int4kv_loadgen --concurrency=$c --duration=1s" <<<"$out" ||
    { echo "loadgen_sweep.sh: no run at concurrency $c in:"; echo "$out"; exit 1; }
  [[ -s $work/json/loadgen_c$c.json ]] || { echo "no JSON report for concurrency $c"; exit 1; }
done
echo PASS
