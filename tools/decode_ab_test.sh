#!/usr/bin/env bash
# Runs decode_ab.sh over a stand-in for decode_bench that prints decode_bench's table with a
# time taken from its environment, and checks the comparison table, the kept outputs and the
# exit codes of a failing run and of bad usage.
set -euo pipefail
ab=$1
work=${TEST_TMPDIR:-$(mktemp -d)}
bench=$work/fake_decode_bench
cat >"$bench" <<'BENCH'
#!/usr/bin/env bash
[[ -n ${FAIL:-} ]] && exit 3
[[ -n ${WHO:-} ]] && echo "$WHO" >>"$ORDER_LOG"
echo "copy ceiling (cudaMemcpy D2D, 1 GiB, read + write): 2970 GB/s"
echo "| group | batch | context | pages | time (us) | GB/s | % of copy | same-bytes copy (us) | % of same-bytes copy |"
echo "|---:|---:|---:|---|---:|---:|---:|---:|---:|"
echo "| 8 | 1 | 4096 | random | ${US:-8.0} | 740 | 24.9 | 3.6 | 41.8 |"
echo "| 32 | 16 | 1024 + 15 x 512 | contiguous | 16.2 | 1574 | 53.0 | 10.1 | 62.5 |"
echo "flags: $*"
BENCH
chmod +x "$bench"

export ORDER_LOG=$work/order
rm -f "$ORDER_LOG"
table=$("$ab" "$work/out" --passes=3 base="$bench",US=8.5,WHO=base new="$bench",US=8.0,WHO=new \
  -- --batches=1)
# Passes alternate the variants' order: base new, new base, base new.
[[ $(tr '\n' ' ' <"$ORDER_LOG") == "base new new base base new " ]] ||
  { echo "run order: $(tr '\n' ' ' <"$ORDER_LOG")"; exit 1; }
echo "$table"
grep -qF '| group | batch | context | pages | base (us) | new (us) | new / base |' <<<"$table"
grep -qF '| 8 | 1 | 4096 | random | 8.5 / 8.5 / 8.5 | 8.0 / 8.0 / 8.0 | 0.941 |' <<<"$table"
grep -qF '| 32 | 16 | 1024 + 15 x 512 | contiguous | 16.2 / 16.2 / 16.2 | 16.2 / 16.2 / 16.2 | 1.000 |' \
  <<<"$table"
# Every run's output is kept, with the flags after "--" passed through.
for name in base new; do
  for pass in 1 2 3; do grep -qF 'flags: --batches=1' "$work/out/$name.$pass.txt"; done
done

# A variant that fails stops the comparison with an error naming it.
rc=0
err=$("$ab" "$work/fail" ok="$bench" broken="$bench",FAIL=1 -- --batches=1 2>&1) || rc=$?
[[ $rc == 1 ]] || { echo "a failing variant gave rc $rc"; exit 1; }
grep -qF 'broken pass 1 failed' <<<"$err"

# Bad usage: no "--", no variant, a bad pass count.
for args in "ok=$bench" "-- --batches=1" "--passes=0 ok=$bench -- x"; do
  rc=0
  # shellcheck disable=SC2086
  "$ab" "$work/usage" $args >/dev/null 2>&1 || rc=$?
  [[ $rc == 2 ]] || { echo "usage '$args' gave rc $rc"; exit 1; }
done
echo PASS
