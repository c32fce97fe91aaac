#!/usr/bin/env bash
# Runs gpu_validate.sh, from another directory, over a stand-in bundle (scripts in place of the
# GPU binaries, of nvidia-smi and of compute-sanitizer) and checks that a binary missing from
# the bundle, a failing step, tests skipped for want of a device, or no GPU at all fails the run,
# that the logs land in the OUT_DIR given relative to the caller, and that a complete passing
# bundle passes.
set -euo pipefail
validate=$1
work=${TEST_TMPDIR:-$(mktemp -d)}
repo=$work/repo
mkdir -p "$repo/tools" "$repo/.gpu_bundle/bin" "$work/path" "$work/caller"
cp "$validate" "$repo/tools/gpu_validate.sh"

cat >"$work/path/nvidia-smi" <<'SMI'
#!/usr/bin/env bash
echo "GPU 0: stand-in"
SMI
cat >"$work/path/compute-sanitizer" <<'SAN'
#!/usr/bin/env bash
echo "========= ERROR SUMMARY: 0 errors"
SAN
chmod +x "$work/path/nvidia-smi" "$work/path/compute-sanitizer"
export PATH=$work/path:$PATH

binaries=(store_kv_cuda_test request_table_test cuda_decode_backend_test
  cuda_batch_invariance_test cuda_plan_run_allocation_test read_stream_test llama_kernels_test
  cublas_gemm_test cuda_kv_attention_test cuda_llama_model_test cuda_engine_test
  cuda_engine_info_test embed_example engine_bench)
for b in "${binaries[@]}"; do
  printf '#!/usr/bin/env bash\n[[ -n ${FAIL_%s:-} ]] && exit 1\necho "[  PASSED  ] 1 test."\n[[ -n ${SKIP_%s:-} ]] && printf "x.cc:1: Skipped\\n%%s\\n[  SKIPPED ] 1 test\\n" "$SKIP_%s"\nexit 0\n' \
    "$b" "$b" "$b" >"$repo/.gpu_bundle/bin/$b"
  chmod +x "$repo/.gpu_bundle/bin/$b"
done

run() {  # run EXPECTED_STATUS: runs from $work/caller with a relative OUT_DIR
  local status=0
  (cd "$work/caller" && "$repo/tools/gpu_validate.sh" logs --no-decode-bench) >"$work/out" 2>&1 ||
    status=$?
  cat "$work/out"
  [[ $status == "$1" ]] || { echo "exit status $status, expected $1" >&2; exit 1; }
}

run 0
grep -q "gpu_validate: 0 step(s) failed, 0 binary(ies) missing" "$work/out"
[[ -s $work/caller/logs/cuda_engine_test.log ]] || { echo "no log in the caller's OUT_DIR" >&2; exit 1; }

rm "$repo/.gpu_bundle/bin/cuda_engine_test"
run 1
grep -q "^cuda_engine_test  *MISSING" "$work/out"
grep -q "gpu_validate: 0 step(s) failed, 1 binary(ies) missing" "$work/out"

FAIL_llama_kernels_test=1 run 1
grep -q "^llama_kernels_test  *rc=1" "$work/out"
grep -q "gpu_validate: 1 step(s) failed, 1 binary(ies) missing" "$work/out"

# A test binary that exits 0 with tests skipped for want of a device fails its step; a test
# skipped for another reason (one that needs no GPU, say) does not.
SKIP_cuda_decode_backend_test="no CUDA device" run 1
grep -q "^cuda_decode_backend_test  *rc=77" "$work/out"
grep -q "gpu_validate: 1 step(s) failed, 1 binary(ies) missing" "$work/out"
SKIP_cuda_engine_info_test="a CUDA device is present" run 1
grep -q "^cuda_engine_info_test  *rc=0" "$work/out"
grep -q "gpu_validate: 0 step(s) failed, 1 binary(ies) missing" "$work/out"

# No GPU at all: the run stops at once.
printf '#!/usr/bin/env bash\necho "No devices were found" >&2\nexit 6\n' >"$work/path/nvidia-smi"
run 1
grep -q "gpu_validate: nvidia-smi sees no GPU" "$work/out"
echo "gpu_validate_test: passed"
