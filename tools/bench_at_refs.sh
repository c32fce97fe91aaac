#!/usr/bin/env bash
# Builds //backend:decode_bench (-c opt) at git refs and copies each build, stripped, into
# .gpu_bundle/bin/decode_bench_NAME, for tools/decode_ab.sh on the GPU machine: the builds that
# the tuning log's A/B rows compare (docs/TUNING_LOG.md names their commits and branches; its
# opening says which of them a clone of main can rebuild).
# INT4KV_REF_TARGETS, a space-separated list of //backend targets (default:
# //backend:decode_bench), builds those instead, each copied as TARGET_NAME: an experiment's
# GPU tests beside its benchmark, say.
#
# Usage (repository root; after tools/gpu_bundle.sh, which replaces .gpu_bundle):
#   tools/bench_at_refs.sh NAME=REF [NAME=REF ...]
# for example `tools/bench_at_refs.sh v28=822e156 v29=239383b`, then on the GPU machine
# `tools/decode_ab.sh OUT v28=decode_bench_v28 v29=decode_bench_v29 -- FLAGS`.
#
# The builds run in one detached git worktree outside this checkout (INT4KV_REF_WORKTREE,
# default ${TMPDIR:-/tmp}/int4kv-bench-refs-N, N a checksum of this checkout's path, since a
# worktree belongs to the repository that made it), so this checkout's files and build outputs
# stay as they are, and each later ref rebuilds only what differs. INT4KV_BAZEL names the bazel
# binary (default: bazel). Exit status: 0 built, 1 a ref unknown or a build failed, 2 usage.
set -euo pipefail
usage="usage: tools/bench_at_refs.sh NAME=REF [NAME=REF ...] (NAME: letters, digits, _)"
read -r -a targets <<<"${INT4KV_REF_TARGETS:-//backend:decode_bench}"
for target in "${targets[@]}"; do
  [[ $target =~ ^//backend:[A-Za-z0-9_]+$ ]] ||
    { echo "bench_at_refs: INT4KV_REF_TARGETS: '$target' is not a //backend:NAME target" >&2; exit 2; }
done
root=$(cd "$(dirname "$0")/.." && pwd)
bazel=${INT4KV_BAZEL:-bazel}
worktree=${INT4KV_REF_WORKTREE:-${TMPDIR:-/tmp}/int4kv-bench-refs-$(printf '%s' "$root" | cksum | cut -d' ' -f1)}

(($# > 0)) || { echo "$usage" >&2; exit 2; }
names=()
commits=()
for arg in "$@"; do
  [[ $arg =~ ^([A-Za-z0-9_]+)=(.+)$ ]] || { echo "$usage" >&2; exit 2; }
  name=${BASH_REMATCH[1]} ref=${BASH_REMATCH[2]}
  # Every ref is resolved before anything is built, so a typo costs no build.
  commit=$(git -C "$root" rev-parse --verify --quiet "$ref^{commit}") ||
    { echo "bench_at_refs: $name=$ref: no such commit in $root" >&2; exit 1; }
  names+=("$name") commits+=("$commit")
done

# The loop below checks out each ref; a new worktree starts at the first.
if [[ ! -e $worktree/.git ]]; then
  git -C "$root" worktree prune  # forgets a worktree whose directory was deleted
  git -C "$root" worktree add --quiet --detach "$worktree" "${commits[0]}"
fi
mkdir -p "$root/.gpu_bundle/bin"
for i in "${!names[@]}"; do
  git -C "$worktree" checkout --quiet --detach --force "${commits[$i]}"
  (cd "$worktree" && "$bazel" build -c opt "${targets[@]}") ||
    { echo "bench_at_refs: ${names[$i]}: the build at ${commits[$i]} failed" >&2; exit 1; }
  bin_dir=$(cd "$worktree" && "$bazel" info -c opt bazel-bin 2>/dev/null)
  for target in "${targets[@]}"; do
    binary=${target#//backend:}
    out=$root/.gpu_bundle/bin/${binary}_${names[$i]}
    rm -f "$out"
    cp "$bin_dir/backend/$binary" "$out"
    chmod u+w "$out"
    if [[ $(head -c 4 "$out") == $'\x7fELF' ]]; then strip "$out"; fi
    echo "${binary}_${names[$i]}: ${commits[$i]}"
  done
done
