#!/usr/bin/env bash
# decode_bench refuses contradictory or empty timing flags and malformed case lists before it
# touches a device: exit status 2 and a line naming what is wrong.
set -uo pipefail
source "$1" || exit 1  # tools/expect_refusal.sh
declare -F expect_refusal > /dev/null || { echo "expect_refusal not defined by $1" >&2; exit 1; }
tool=$2
expect_refusal "--separate_runs and --store_before_runs: choose one" \
  --separate_runs --store_before_runs
expect_refusal "--repeats = 0, --runs_per_graph = 32: both must be >= 1" --repeats=0
expect_refusal "--repeats = 9, --runs_per_graph = 0: both must be >= 1" --runs_per_graph=0
expect_refusal "bad number 'x'" --batches=1,x
expect_refusal "--batches: 0 is invalid: must be >= 1" --batches=1,0
expect_refusal "--contexts: -5 is invalid: must be >= 1" --contexts=-5
expect_refusal "--repeats = 9, --runs_per_graph = 2147483647: both must be <= 10000" \
  --runs_per_graph=2147483647
expect_refusal "--other_rows_context = -1: must be >= 0 (0: every row the context)" \
  --other_rows_context=-1
expect_refusal "--max_pool_gib = -1: must be > 0" --max_pool_gib=-1
expect_refusal "--max_pool_gib = nan: must be > 0" --max_pool_gib=nan
expect_refusal "--group_sizes: 0 is invalid: must be >= 1" --group_sizes=8,0
expect_refusal "--group_sizes: KvCacheConfig.group_size = 12" --group_sizes=12
expect_refusal "--random_window = -1: must be >= 0 (0: the whole pool)" --random_window=-1
expect_refusal "bad page-table kind 'randm' (random, sorted, contiguous or served)" \
  --page_tables=random,randm
expect_refusal "--sorted_run = -2: must be >= 0 (0: whole rows)" --sorted_run=-2
expect_refusal "--served_request_tokens = 0: must be >= 1" --served_request_tokens=0
expect_refusal "--ceiling_copies = 0: must be in [1, 10000]" --ceiling_copies=0
expect_refusal "quant mode 'asym' is invalid: must be symmetric or asymmetric" --mode=asym
expect_refusal "--batch_invariant_splits = 1025: must be 0 (off) or in [1, 1024]" \
  --batch_invariant_splits=1025
expect_refusal "--max_seq_len = -1: must be >= 0 (0: each case's context)" --max_seq_len=-1
expect_refusal "--logit_soft_cap = 0.001: must be 0 (none) or in [0.01, 1000]" \
  --logit_soft_cap=0.001
expect_refusal "--logit_soft_cap = nan: must be 0 (none) or in [0.01, 1000]" --logit_soft_cap=nan
expect_refusal "--logit_soft_cap = 1001: must be 0 (none) or in [0.01, 1000]" --logit_soft_cap=1001
expect_refusal "--check_rows = -1: must be >= 0 (0: no row checked)" --check_rows=-1
expect_refusal "--batches: 70000 is invalid: must be <= 65536" --batches=70000
expect_refusal "--batches=128 --contexts=1024 (with --max_seq_len): KvCacheConfig.max_seq_len = \
16777216 is invalid: must be such that max_requests * max_seq_len <= 1073741824" \
  --batches=128 --contexts=1024 --max_seq_len=16777216
expect_refusal "unexpected argument 'false'" --separate_runs false
echo "decode_bench flag checks: ok"
