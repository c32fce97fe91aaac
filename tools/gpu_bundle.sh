#!/usr/bin/env bash
# Bundles Bazel-built binaries and the non-glibc shared libraries they load into
# .gpu_bundle/ (git-ignored), so they can be copied to the GPU machine and run there with
#   LD_LIBRARY_PATH=.gpu_bundle/lib:/usr/local/cuda/targets/x86_64-linux/lib .gpu_bundle/bin/NAME
# cuBLAS is left out (libcublasLt alone is over 500 MB): the GPU machine's CUDA 13 has it.
# Binaries and libraries are stripped of symbols.
#
# Usage: tools/gpu_bundle.sh //pkg:target [//pkg:target ...]
# Builds the targets with -c opt first. Test targets are bundled like binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
(($# > 0)) || { echo "usage: $0 //pkg:target ..." >&2; exit 2; }

bazel build -c opt "$@"
out=.gpu_bundle
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
bin_dir=$(bazel info -c opt bazel-bin 2>/dev/null)
for label in "$@"; do
  path="${label#//}"
  path="${path/://}"
  cp "$bin_dir/$path" "$out/bin/"
  libs=$(ldd "$bin_dir/$path")
  if grep -q "not found" <<<"$libs"; then
    echo "$label: libraries not found here:" >&2
    grep "not found" <<<"$libs" >&2
    exit 1
  fi
  # Copy every resolved library except the C runtime, which the GPU machine has.
  awk '/=> \// {print $3}' <<<"$libs" | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
      libcublas*) ;;
      *) [[ -e $out/lib/$(basename "$lib") ]] || cp "$lib" "$out/lib/" ;;  # shared by several
    esac
  done
done
# Symbols are not needed there. The full bundle of tools/gpu_validate.sh is about 75 MB even
# stripped (each binary links the same kernels), over the 64 MiB that the
# GPU machine these docs measure on takes in one upload: tools/gpu_pack.sh packs it, with any builds beside it, into about a quarter.
chmod -R u+w "$out"
strip --strip-unneeded "$out"/bin/* "$out"/lib/*
du -sh "$out"
