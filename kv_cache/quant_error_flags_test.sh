#!/usr/bin/env bash
# quant_error refuses context lengths and trial counts out of range before it allocates anything:
# exit status 2 and a line naming the flag and its limits.
set -uo pipefail
source "$1" || exit 1  # tools/expect_refusal.sh
declare -F expect_refusal > /dev/null || { echo "expect_refusal not defined by $1" >&2; exit 1; }
tool=$2
expect_refusal "--seq_len = 0 is invalid: must be in [1, 1048576]" --seq_len=0
expect_refusal "--seq_len = 1048577 is invalid: must be in [1, 1048576]" --seq_len=1048577
expect_refusal "--seq_len = 2147483647 is invalid: must be in [1, 1048576]" --seq_len=2147483647
expect_refusal "--trials = 0 is invalid: must be in [1, 10000]" --trials=0
expect_refusal "--trials = 2147483647 is invalid: must be in [1, 10000]" --trials=2147483647
expect_refusal "unexpected argument 'false'" --seq_len=64 false
echo "quant_error flag checks: ok"
