#!/usr/bin/env bash
# Packs a stand-in .gpu_bundle with gpu_pack.sh and unpacks it with gpu_unpack.sh in a scratch
# checkout: the whole bundle, then named binaries alone (with the libraries), by xz and by the
# Python fallback where xz is missing; and the refusals of a missing bundle or binary.
set -euo pipefail
pack_script=$(realpath "$1")
unpack_script=$(realpath "$2")
work=${TEST_TMPDIR:-$(mktemp -d)}
repo=$work/repo
mkdir -p "$repo/tools" "$repo/.gpu_bundle/bin" "$repo/.gpu_bundle/lib"
cp "$pack_script" "$repo/tools/gpu_pack.sh"
cp "$unpack_script" "$repo/tools/gpu_unpack.sh"
echo lib-a >"$repo/.gpu_bundle/lib/liba.so"
echo first >"$repo/.gpu_bundle/bin/first"
echo second >"$repo/.gpu_bundle/bin/second"
chmod +x "$repo/.gpu_bundle/bin/first" "$repo/.gpu_bundle/bin/second"
listing() { (cd "$repo" && find .gpu_bundle -type f | sort | xargs -r cat); }

(cd "$repo" && tools/gpu_pack.sh >/dev/null)
whole=$(listing)
rm -rf "$repo/.gpu_bundle/bin/first"
(cd "$repo" && tools/gpu_unpack.sh >/dev/null)
[[ $(listing) == "$whole" ]] || { echo "the whole bundle did not come back"; exit 1; }
[[ -x $repo/.gpu_bundle/bin/first ]] || { echo "a binary lost its mode"; exit 1; }

(cd "$repo" && tools/gpu_pack.sh second >/dev/null)
# Python's lzma where xz is missing: a PATH of the few tools gpu_unpack.sh needs, xz not among them.
tools_dir=$work/no_xz
mkdir -p "$tools_dir"
for tool in bash dirname rm du tar python3; do ln -sf "$(command -v "$tool")" "$tools_dir/$tool"; done
(cd "$repo" && PATH=$tools_dir tools/gpu_unpack.sh >/dev/null)
[[ ! -e $repo/.gpu_bundle/bin/first ]] || { echo "an unnamed binary was packed"; exit 1; }
[[ $(cat "$repo/.gpu_bundle/bin/second") == second ]] || { echo "the named binary is missing"; exit 1; }
[[ $(cat "$repo/.gpu_bundle/lib/liba.so") == lib-a ]] || { echo "the libraries are missing"; exit 1; }

rc=0
err=$(cd "$repo" && tools/gpu_pack.sh second nothing 2>&1) || rc=$?
[[ $rc == 1 ]] && grep -qF "no .gpu_bundle/bin/nothing" <<<"$err" ||
  { echo "a missing binary gave rc $rc: $err"; exit 1; }
rm -rf "$repo/.gpu_bundle"
rc=0
(cd "$repo" && tools/gpu_pack.sh >/dev/null 2>&1) || rc=$?
[[ $rc == 1 ]] || { echo "a missing bundle gave rc $rc"; exit 1; }
rm -rf "$repo/.gpu_pack"
rc=0
(cd "$repo" && tools/gpu_unpack.sh >/dev/null 2>&1) || rc=$?
[[ $rc == 1 ]] || { echo "a missing pack gave rc $rc"; exit 1; }
echo PASS
