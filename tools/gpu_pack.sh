#!/usr/bin/env bash
# Packs .gpu_bundle (tools/gpu_bundle.sh, tools/bench_at_refs.sh) into .gpu_pack/bundle.tar.xz,
# for a GPU machine that takes a limited size of carried files (64 MiB on the lent one). Every
# bundled binary links the same kernels, so the bundle compresses well: the full one of
# tools/gpu_validate.sh (about 75 MB) with four decode_bench builds beside it, 98 MB, packs
# into 27 MB. xz's single-threaded default is used on purpose: its window spans whole
# binaries, where gzip's does not (77 MB).
#
# Usage (repository root): tools/gpu_pack.sh; then on the GPU machine, before anything else,
# tools/gpu_unpack.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d .gpu_bundle ]] || { echo "gpu_pack: no .gpu_bundle here; run tools/gpu_bundle.sh" >&2; exit 1; }
mkdir -p .gpu_pack
tar -cf - .gpu_bundle | xz > .gpu_pack/bundle.tar.xz.partial
mv .gpu_pack/bundle.tar.xz.partial .gpu_pack/bundle.tar.xz
du -sh .gpu_pack/bundle.tar.xz
