#!/usr/bin/env bash
# On the GPU machine: replaces .gpu_bundle with the one packed in .gpu_pack/bundle.tar.xz by
# tools/gpu_pack.sh, with xz where it is installed and Python's lzma module otherwise.
#
# Usage (from any directory): tools/gpu_unpack.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pack=.gpu_pack/bundle.tar.xz
[[ -f $pack ]] || { echo "gpu_unpack: no $pack; copy .gpu_pack here first" >&2; exit 1; }
rm -rf .gpu_bundle
if command -v xz >/dev/null; then
  xz -dc "$pack" | tar -xf -
else
  # The "data" filter (refusing links and paths out of the tree) where this Python has it.
  python3 -c 'import sys, tarfile
options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
tarfile.open(sys.argv[1]).extractall(".", **options)' "$pack"
fi
du -sh .gpu_bundle
