#!/usr/bin/env bash
# quant_error refuses context lengths it cannot hold before it allocates anything: exit status 2
# and a line naming the flag and its limit.
set -uo pipefail
tool=$1
expect_refusal() {  # expect_refusal MESSAGE_FRAGMENT FLAGS...
  local fragment=$1
  shift
  local out rc
  out=$("$tool" "$@" 2>&1)
  rc=$?
  if ((rc != 2)); then
    echo "quant_error $*: exit status $rc, want 2; output: $out" >&2
    exit 1
  fi
  grep -qF -- "$fragment" <<<"$out" || {
    echo "quant_error $*: output lacks '$fragment': $out" >&2
    exit 1
  }
}
expect_refusal "--seq_len and --trials must be >= 1" --seq_len=0
expect_refusal "--seq_len = 1048577 is too large: at most 1048576" --seq_len=1048577
expect_refusal "--seq_len = 2147483647 is too large: at most 1048576" --seq_len=2147483647
echo "quant_error flag checks: ok"
