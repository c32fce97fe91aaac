#!/usr/bin/env bash
# Runs bench_at_refs.sh in a scratch git repository with a stand-in for bazel whose binaries
# hold the commit they were built at, and checks that each NAME gets the build of its own ref
# (of decode_bench, or of the targets INT4KV_REF_TARGETS names), that the checkout's files are
# left alone, and the exit codes of an unknown ref and of bad usage.
set -euo pipefail
script=$(realpath "$1")
work=${TEST_TMPDIR:-$(mktemp -d)}
repo=$work/repo
export GIT_AUTHOR_NAME=test GIT_AUTHOR_EMAIL=test@example.com
export GIT_COMMITTER_NAME=test GIT_COMMITTER_EMAIL=test@example.com
git init --quiet "$repo"
mkdir -p "$repo/tools"
cp "$script" "$repo/tools/bench_at_refs.sh"
echo one >"$repo/marker"
git -C "$repo" add -A && git -C "$repo" commit --quiet -m one
first=$(git -C "$repo" rev-parse HEAD)
echo two >"$repo/marker"
git -C "$repo" commit --quiet -am two
second=$(git -C "$repo" rev-parse HEAD)
echo "not committed" >"$repo/marker"  # the checkout's own edit, which must survive

# The stand-in: "build" writes a binary naming the worktree's commit, "info" says where.
fake_bazel=$work/fake_bazel
cat >"$fake_bazel" <<'BAZEL'
#!/usr/bin/env bash
bin=$PWD/fake-bazel-bin
case $1 in
  build)
    mkdir -p "$bin/backend"
    for label in "${@:4}"; do git rev-parse HEAD >"$bin/backend/${label#//backend:}"; done
    ;;
  info) echo "$bin" ;;
esac
BAZEL
chmod +x "$fake_bazel"
export INT4KV_BAZEL=$fake_bazel INT4KV_REF_WORKTREE=$work/worktree

(cd "$repo" && tools/bench_at_refs.sh old="$first" new=HEAD)
[[ $(cat "$repo/.gpu_bundle/bin/decode_bench_old") == "$first" ]]
[[ $(cat "$repo/.gpu_bundle/bin/decode_bench_new") == "$second" ]]
[[ $(cat "$repo/marker") == "not committed" ]]
# A second run reuses the worktree.
(cd "$repo" && tools/bench_at_refs.sh again=HEAD~1)
[[ $(cat "$repo/.gpu_bundle/bin/decode_bench_again") == "$first" ]]

# Other targets, each under its own name.
(cd "$repo" && INT4KV_REF_TARGETS="//backend:decode_bench //backend:some_test" \
  tools/bench_at_refs.sh pair=HEAD~1)
[[ $(cat "$repo/.gpu_bundle/bin/decode_bench_pair") == "$first" ]]
[[ $(cat "$repo/.gpu_bundle/bin/some_test_pair") == "$first" ]]
rc=0
(cd "$repo" && INT4KV_REF_TARGETS="//server:x" tools/bench_at_refs.sh no=HEAD >/dev/null 2>&1) ||
  rc=$?
[[ $rc == 2 ]] || { echo "a target outside //backend gave rc $rc"; exit 1; }

# An unknown ref fails before any build, naming it.
rc=0
err=$(cd "$repo" && tools/bench_at_refs.sh ok=HEAD bad=no-such-ref 2>&1) || rc=$?
[[ $rc == 1 ]] || { echo "an unknown ref gave rc $rc"; exit 1; }
grep -qF 'bad=no-such-ref: no such commit' <<<"$err"
[[ ! -e $repo/.gpu_bundle/bin/decode_bench_ok ]]

# Bad usage: nothing to build, no "=", a name with other characters.
for args in "" "HEAD" "a-b=HEAD"; do
  rc=0
  # shellcheck disable=SC2086
  (cd "$repo" && tools/bench_at_refs.sh $args >/dev/null 2>&1) || rc=$?
  [[ $rc == 2 ]] || { echo "usage '$args' gave rc $rc"; exit 1; }
done
echo PASS
