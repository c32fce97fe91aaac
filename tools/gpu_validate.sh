#!/usr/bin/env bash
# Runs every GPU test, compute-sanitizer and the benchmarks on the GPU machine, from a bundle
# made here by
#   tools/gpu_bundle.sh //kv_cache:store_kv_cuda_test //kv_cache:request_table_test \
#     //backend:cuda_decode_backend_test //backend:cuda_batch_invariance_test \
#     //backend:cuda_plan_run_allocation_test \
#     //backend:read_stream_test //backend:decode_bench \
#     //backend:embed_example //server/cuda:llama_kernels_test //server/cuda:cublas_gemm_test \
#     //server/cuda:cuda_kv_attention_test //server/cuda:cuda_llama_model_test \
#     //server/cuda:cuda_engine_test //server/cuda:cuda_engine_info_test //server:engine_bench
# then packed by tools/gpu_pack.sh and copied there as .gpu_pack (the bundle itself is too large
# to upload), and unpacked there first by tools/gpu_unpack.sh.
# Usage there (from any directory): tools/gpu_validate.sh OUT_DIR [--no-decode-bench]; a
# binary missing from the bundle fails the run as a failing step does.
# Logs go to OUT_DIR; a summary line per step goes to stdout. A GPU test that skips because it
# found no CUDA device fails its step (other skips, such as a no-GPU test's, are expected here).
set -uo pipefail
out=$(realpath -m "${1:?usage: tools/gpu_validate.sh OUT_DIR [--no-decode-bench]}")
decode_bench=1
[[ "${2:-}" == "--no-decode-bench" ]] && decode_bench=0
mkdir -p "$out"
cd "$(dirname "$0")/.."  # the bundle is found from the repository root
export LD_LIBRARY_PATH="$PWD/.gpu_bundle/lib:/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}"
bin=.gpu_bundle/bin
nvidia-smi -L || { echo "gpu_validate: nvidia-smi sees no GPU" >&2; exit 1; }
failures=0
missing=0

step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  if ((rc == 0)) && grep -qx 'no CUDA device' "$out/$name.log"; then
    rc=77  # tests skipped for want of a device: it was not usable, and they checked nothing
  fi
  ((rc == 0)) || failures=$((failures + 1))
  printf '%-28s rc=%-3d %4ds  %s\n' "$name" "$rc" $((SECONDS - start)) \
    "$(grep -E '^\[  (PASSED|FAILED|SKIPPED)|SUMMARY|tokens/s|ceiling' "$out/$name.log" | tail -n 1)"
}

# present BINARY: true if the bundle has it, else reports it missing (a failed validation).
present() {
  [[ -x $bin/$1 ]] && return 0
  printf '%-28s MISSING from %s\n' "$1" "$bin"
  missing=$((missing + 1))
  return 1
}

for t in store_kv_cuda_test request_table_test cuda_decode_backend_test \
  cuda_batch_invariance_test cuda_plan_run_allocation_test read_stream_test \
  llama_kernels_test cublas_gemm_test cuda_kv_attention_test cuda_llama_model_test \
  cuda_engine_test cuda_engine_info_test; do
  present "$t" && step "$t" 300 "$bin/$t"
done
present embed_example && step embed_example 60 "$bin/embed_example" --backend=cuda

sanitize() {  # sanitize TOOL TEST FILTER [NAME_SUFFIX: a second step of the same tool and test]
  [[ -x $bin/$2 ]] || return 0  # reported missing above
  step "$1-$2${4:+-$4}" 150 compute-sanitizer --tool "$1" --error-exitcode 1 "$bin/$2" --gtest_filter="$3"
}
# (The unchecked-error test fails a cudaMalloc on purpose, which memcheck reports as an error.)
sanitize memcheck store_kv_cuda_test '*:-*EarlierUnchecked*'
sanitize memcheck request_table_test '*'
sanitize memcheck cuda_decode_backend_test \
  '*SmallMixedBatch*:*Graph*:*Truncation*:*LargeBatch*:*LengthsFarBeyond*:*Rewritten*:'\
'*OutsideThePool*:*InPlace*:*KeepMoving*:*EveryMagnitude*:*64And256*:*FactoredPath*:'\
'*AfterStoreKv*:*BatchInvariant*:*WideBlocksServe*'
sanitize racecheck cuda_decode_backend_test \
  '*SmallMixedBatch*:*Graph*:*LargeBatch*:*Rewritten*:*InPlace*:*AfterStoreKv*:*FactoredPath*'
sanitize racecheck cuda_decode_backend_test '*WideBlocksServe*' wide  # about 40 s alone
sanitize memcheck read_stream_test '*'
sanitize memcheck llama_kernels_test '*'
sanitize racecheck llama_kernels_test '*'
sanitize memcheck cuda_engine_test '*Graph*'

present engine_bench && step engine_bench 300 "$bin/engine_bench"
((decode_bench)) && present decode_bench && step decode_bench 400 "$bin/decode_bench"
echo "gpu_validate: $failures step(s) failed, $missing binary(ies) missing"
exit $((failures + missing > 0))
