#!/usr/bin/env bash
# Runs the embedding example on the CPU and checks that both rows were attended and every
# slot came back.
set -euo pipefail
out=$("$1")
echo "$out"
grep -q "row 0 (request 0, 5 tokens)" <<<"$out"
grep -q "row 1 (request 1, 12 tokens)" <<<"$out"
grep -q "free slots after the step: 64 of 64" <<<"$out"
! grep -q "nan" <<<"$out"
