# Sourced by the flag tests of int4kv's binaries (decode_bench, quant_error, and the stray-word
# checks of //tests:binaries_help_test). Defines
#   expect_refusal MESSAGE_FRAGMENT FLAGS...
# which runs "$tool" FLAGS and fails the test unless it exits with status 2 (a refused flag)
# and prints MESSAGE_FRAGMENT. The sourcing script sets `tool` to the binary's path.
expect_refusal() {
  local fragment=$1
  shift
  local out rc
  out=$("$tool" "$@" 2>&1)
  rc=$?
  if ((rc != 2)); then
    echo "$(basename "$tool") $*: exit status $rc, want 2; output: $out" >&2
    exit 1
  fi
  grep -qF -- "$fragment" <<<"$out" || {
    echo "$(basename "$tool") $*: output lacks '$fragment': $out" >&2
    exit 1
  }
}
