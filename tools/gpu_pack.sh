#!/usr/bin/env bash
# Packs .gpu_bundle (tools/gpu_bundle.sh, tools/bench_at_refs.sh) into .gpu_pack/bundle.tar.xz,
# for a GPU machine that takes a limited size of uploaded files (64 MiB on the one these docs
# measure on). Every
# bundled binary links the same kernels, so the bundle compresses well: the full one of
# tools/gpu_validate.sh (about 75 MB) with four decode_bench builds beside it, 98 MB, packs
# into 27 MB. xz's single-threaded default is used on purpose: its window spans whole
# binaries, where gzip's does not (77 MB).
#
# Usage (repository root): tools/gpu_pack.sh [BINARY ...]; then on the GPU machine, before
# anything else, tools/gpu_unpack.sh. Named binaries of .gpu_bundle/bin are packed alone (with
# all of .gpu_bundle/lib), for a call that needs only those: a smaller pack unpacks sooner.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d .gpu_bundle ]] || { echo "gpu_pack: no .gpu_bundle here; run tools/gpu_bundle.sh" >&2; exit 1; }
members=(.gpu_bundle)
if (($# > 0)); then
  members=(.gpu_bundle/lib)
  for binary in "$@"; do
    [[ -f .gpu_bundle/bin/$binary ]] || { echo "gpu_pack: no .gpu_bundle/bin/$binary" >&2; exit 1; }
    members+=(".gpu_bundle/bin/$binary")
  done
fi
mkdir -p .gpu_pack
tar -cf - "${members[@]}" | xz > .gpu_pack/bundle.tar.xz.partial
mv .gpu_pack/bundle.tar.xz.partial .gpu_pack/bundle.tar.xz
du -sh .gpu_pack/bundle.tar.xz
