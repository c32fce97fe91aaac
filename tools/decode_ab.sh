#!/usr/bin/env bash
# Compares decode_bench builds, or one build under different environment variables, on the
# GPU machine. Each pass runs every variant once, odd passes in the order given and even ones
# in reverse, so that the machine's drift (clocks, temperature) spreads over all of them; the
# table then gives each case's time in every pass and each variant's mean over the passes
# against the first variant's.
#
# Usage (repository root on the GPU machine, after tools/gpu_bundle.sh //backend:decode_bench;
# other builds copied into .gpu_bundle/bin under names of their own, by tools/bench_at_refs.sh
# for builds of other git refs):
#   tools/decode_ab.sh OUT_DIR [--passes=N] NAME=BINARY[,VAR=VALUE...] ... -- BENCH_FLAGS
# BINARY is a file in .gpu_bundle/bin or a path; N defaults to 2. Each run's full output is
# kept as OUT_DIR/NAME.PASS.txt. Example:
#   tools/decode_ab.sh /tmp/ab main=decode_bench_main new=decode_bench -- --batches=1,16 \
#     --contexts=4096,65536 --group_sizes=8 --page_tables=random --repeats=7
set -euo pipefail
usage="usage: tools/decode_ab.sh OUT_DIR [--passes=N] NAME=BINARY[,VAR=VALUE...] ... -- FLAGS"
out=${1:?$usage}
shift
passes=2
names=()
specs=()
while (($# > 0)) && [[ $1 != "--" ]]; do
  case $1 in
    --passes=*) passes=${1#--passes=} ;;
    *=*) names+=("${1%%=*}") specs+=("${1#*=}") ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
(($# > 0)) || { echo "$usage" >&2; exit 2; }
shift  # the "--"
((${#names[@]} > 0)) || { echo "$usage" >&2; exit 2; }
[[ $passes =~ ^[1-9][0-9]*$ ]] || { echo "--passes must be a positive integer" >&2; exit 2; }

export LD_LIBRARY_PATH="$PWD/.gpu_bundle/lib:/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}"
mkdir -p "$out"
for ((pass = 1; pass <= passes; ++pass)); do
  # Odd passes run the variants in the order given, even ones in reverse (A B, B A, A B, ...),
  # so that no variant always runs first, on the card the longest idle.
  order=("${!names[@]}")
  if ((pass % 2 == 0)); then
    order=()
    for ((i = ${#names[@]} - 1; i >= 0; --i)); do order+=("$i"); done
  fi
  for i in "${order[@]}"; do
    IFS=',' read -r -a parts <<<"${specs[$i]}"
    binary=${parts[0]}
    [[ -x $binary ]] || binary=.gpu_bundle/bin/$binary
    env "${parts[@]:1}" "$binary" "$@" >"$out/${names[$i]}.$pass.txt" 2>&1 ||
      { echo "${names[$i]} pass $pass failed: see $out/${names[$i]}.$pass.txt" >&2; exit 1; }
  done
done
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true

# Rows of decode_bench's table: | group | batch | context | pages | time (us) | ...
for name in "${names[@]}"; do
  for ((pass = 1; pass <= passes; ++pass)); do
    awk -F'|' -v name="$name" -v pass="$pass" '/^\| [0-9]/ {
      for (i = 2; i <= 6; ++i) gsub(/^ +| +$/, "", $i)
      printf "%s|%s|%s|%s\t%s\t%d\t%s\n", $2, $3, $4, $5, name, pass, $6 }' \
      "$out/$name.$pass.txt"
  done
done | awk -F'\t' -v variants="${names[*]}" '
  BEGIN { n = split(variants, order, " ") }
  !($1 in seen) { seen[$1] = 1; cases[++count] = $1 }
  { key = $1 SUBSEP $2; times[key] = (runs[key] ? times[key] " / " : "") $4;
    sum[key] += $4; runs[key]++ }
  END {
    printf "| group | batch | context | pages |"
    for (v = 1; v <= n; ++v) printf " %s (us) |", order[v]
    for (v = 2; v <= n; ++v) printf " %s / %s |", order[v], order[1]
    printf "\n|---:|---:|---:|---|"
    for (v = 1; v < 2 * n; ++v) printf "---:|"
    printf "\n"
    for (c = 1; c <= count; ++c) {
      split(cases[c], f, "|")
      printf "| %s | %s | %s | %s |", f[1], f[2], f[3], f[4]
      for (v = 1; v <= n; ++v) printf " %s |", times[cases[c], order[v]]
      base = cases[c] SUBSEP order[1]
      for (v = 2; v <= n; ++v) {
        key = cases[c] SUBSEP order[v]
        if (runs[key] && runs[base] && sum[base] > 0) {
          printf " %.3f |", (sum[key] / runs[key]) / (sum[base] / runs[base])
        } else {
          printf " - |"
        }
      }
      printf "\n"
    }
  }'
