#!/usr/bin/env bash
# Runs the embedding example on the CPU and checks that every row was attended (a row left
# out would print zeros), the forked one included, that each row's output agrees with float64
# over the same dequantized cache, that the fork shared its parent's 8 slots (5 + 12 + 3 in
# use, not 5 + 12 + 11), and that every slot came back.
set -euo pipefail
out=$("$1")
echo "$out"
for row in "row 0 (request 0, 5 tokens)" "row 1 (request 1, 12 tokens)" \
  "row 2 (request 2, 11 tokens)"; do
  line=$(grep -F "$row" <<<"$out")
  # out[0][0..3]: a weighted mean of random V rows, so not all four zero.
  awk '{ for (i = 1; i <= NF; ++i) if ($i + 0 != 0) found = 1 } END { exit !found }' \
    <<<"${line#*= }" || { echo "$row: all zeros" >&2; exit 1; }
done
# Each row against float64 over the same dequantized cache: the cpu backend computes in float32.
for row in 0 1 2; do
  error=$(sed -n "s/^row $row: relative error against float64: //p" <<<"$out")
  [[ -n $error ]] || { echo "row $row: no relative error printed" >&2; exit 1; }
  awk -v e="$error" 'BEGIN { exit !(e + 0 < 1e-5) }' ||
    { echo "row $row: relative error $error against float64, over 1e-5" >&2; exit 1; }
done
grep -q "request 2: forked from request 1 after 8 tokens, 20 slots in use" <<<"$out" ||
  { echo "no fork of request 1 sharing its first 8 slots" >&2; exit 1; }
grep -q "free slots after the step: 64 of 64" <<<"$out"
if grep -qi "nan" <<<"$out"; then
  echo "NaN in the output" >&2
  exit 1
fi
