#!/usr/bin/env bash
# Instruction mix of one kernel in a binary (run where cuobjdump exists, e.g. the GPU
# machine): tools/sass_stats.sh BINARY KERNEL_NAME_SUBSTRING
set -euo pipefail
cuobjdump -sass "$1" | awk -v pat="$2" '
  /Function :/ { on = index($0, pat) > 0; if (on) print $0 }
  on && /\/\*[0-9a-f]+\*\/ +[A-Z@]/ {
    line = $0; sub(/.*\*\/ +/, "", line); sub(/^@!?U?P[0-9T] +/, "", line)
    split(line, parts, /[ .;]/); count[parts[1]]++; total++
  }
  END { for (op in count) printf "%6d %s\n", count[op], op; printf "%6d TOTAL\n", total }' |
  sort -rn | head -40
