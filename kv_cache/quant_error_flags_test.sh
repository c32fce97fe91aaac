#!/usr/bin/env bash
# quant_error refuses context lengths it cannot hold before it allocates anything: exit status 2
# and a line naming the flag and its limit.
set -uo pipefail
source "$1" || exit 1  # tools/expect_refusal.sh
declare -F expect_refusal > /dev/null || { echo "expect_refusal not defined by $1" >&2; exit 1; }
tool=$2
expect_refusal "--seq_len and --trials must be >= 1" --seq_len=0
expect_refusal "--seq_len = 1048577 is too large: at most 1048576" --seq_len=1048577
expect_refusal "--seq_len = 2147483647 is too large: at most 1048576" --seq_len=2147483647
echo "quant_error flag checks: ok"
