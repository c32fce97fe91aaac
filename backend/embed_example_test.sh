#!/usr/bin/env bash
# Runs the embedding example on the CPU and checks that both rows were attended (a row left
# out would print zeros) and every slot came back.
set -euo pipefail
out=$("$1")
echo "$out"
for row in "row 0 (request 0, 5 tokens)" "row 1 (request 1, 12 tokens)"; do
  line=$(grep -F "$row" <<<"$out")
  # out[0][0..3]: a weighted mean of random V rows, so not all four zero.
  awk '{ for (i = 1; i <= NF; ++i) if ($i + 0 != 0) found = 1 } END { exit !found }' \
    <<<"${line#*= }" || { echo "$row: all zeros" >&2; exit 1; }
done
grep -q "free slots after the step: 64 of 64" <<<"$out"
if grep -qi "nan" <<<"$out"; then
  echo "NaN in the output" >&2
  exit 1
fi
