// How another server embeds int4kv: a paged INT4 KV cache plus a decode-attention backend,
// no gRPC and no model code.
//
//   bazel run //backend:embed_example                      # CPU
//   bazel run -c opt //backend:embed_example -- --backend=cuda   # on a GPU machine
//
// Two requests (5 and 12 tokens) get random K/V written into the cache; one decode step then
// attends both over their contexts and prints the first outputs of each row, and each row's
// relative error against the same attention computed in float64 over the dequantized cache.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "backend/create_backend.h"
#include "backend/float64_attention.h"
#include "common/cuda_check.h"
#include "common/device_memory.h"
#include "common/half.h"
#include "common/parse_flags.h"
#include "common/status_macros.h"
#include "kv_cache/kv_cache.h"
#include "kv_cache/store_kv.h"
#include "kv_cache/store_kv_cuda.h"

ABSL_FLAG(std::string, backend, "cpu", "cpu or cuda");

namespace int4kv {
namespace {

constexpr int kKvHeads = 2, kQHeads = 8, kHeadDim = 128;

// Copies `bytes` from the host into fresh device memory that frees itself, so that an error
// part-way through leaks nothing.
absl::Status Upload(const void* host, size_t bytes, DeviceBuffer* device, const char* what) {
  RETURN_IF_ERROR(device->Allocate(bytes, what));
  CUDA_RETURN_IF_ERROR(cudaMemcpy(device->get(), host, bytes, cudaMemcpyHostToDevice));
  return absl::OkStatus();
}

// Layer 1 of the request's K/V as the backend reads it: [tokens][2 * kKvHeads][kHeadDim]
// float32, K heads then V heads.
absl::StatusOr<std::vector<float>> DequantizedLayer1(const KvCache& cache, int32_t request,
                                                     bool cuda) {
  const absl::Span<const int32_t> slots = cache.requests().Tokens(request);
  if (cuda) return DequantizeCudaToHost(cache.view(), 1, slots, nullptr);
  std::vector<float> kv(slots.size() * 2 * kKvHeads * kHeadDim);
  RETURN_IF_ERROR(DequantizeHost(cache.view(), 1, slots, kv.data()));
  return kv;
}

// ||out - ref|| / ||ref|| over one row's heads, ref being softmax(q k / sqrt(head_dim)) v in
// float64 over layer 1 of the request's dequantized K/V.
//   q, out: [kQHeads][kHeadDim] float32.
absl::StatusOr<double> ErrorAgainstFloat64(const KvCache& cache, int32_t request, bool cuda,
                                           const float* q, const float* out) {
  ASSIGN_OR_RETURN(const std::vector<float> kv, DequantizedLayer1(cache, request, cuda));
  return RowErrorAgainstFloat64(kv, {kQHeads, kKvHeads, kHeadDim}, q, out);
}

absl::Status Run(bool cuda) {
  // 1. The cache: 2 layers, 2 KV heads of 128 dims, group 8 symmetric (LightLLM's layout),
  //    room for 64 tokens, 4 requests of up to 32 tokens.
  KvCacheConfig config;
  config.num_layers = 2;
  config.kv_heads = kKvHeads;
  config.head_dim = kHeadDim;
  config.group_size = 8;
  config.capacity_slots = 64;
  config.max_requests = 4;
  config.max_seq_len = 32;
  ASSIGN_OR_RETURN(std::unique_ptr<KvCache> cache,
                   KvCache::Create(config, cuda ? MemoryKind::kDevice : MemoryKind::kHost));
  std::printf("cache: %s, %lld bytes of pools\n", config.DebugString().c_str(),
              static_cast<long long>(config.PoolBytes()));

  // 2. Requests: a req_to_token row each, slots from the allocator (or shared with the
  //    request a row was forked from), K/V quantized on write.
  //    Whatever happens below, the requests give their slots and rows back on the way out.
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<DecodeRow> rows;
  // Gives every row's slots and request back; the first error, if any.
  const auto release_requests = [&] {
    absl::Status released;
    for (const DecodeRow& row : rows) released.Update(cache->ReleaseRequest(row.request));
    return released;
  };
  absl::Cleanup release_on_error = [&] {
    const absl::Status status = release_requests();
    if (!status.ok()) std::fprintf(stderr, "%s\n", status.ToString().c_str());
  };
  // A device cache's store skips a token whose slot is outside the pool and counts it here,
  // read back once after all the stores instead of after each (the sync after each store
  // below is this example's: it frees each store's inputs right away).
  DeviceBuffer skipped_tokens;
  if (cuda) {
    RETURN_IF_ERROR(skipped_tokens.Allocate(sizeof(int32_t), "skipped-token counter"));
    CUDA_RETURN_IF_ERROR(cudaMemset(skipped_tokens.get(), 0, sizeof(int32_t)));
  }
  // Writes random K/V, each layer its own, into `slots` (a row's new tokens).
  const auto store_new_tokens = [&](const std::vector<int32_t>& slots) -> absl::Status {
    const int length = static_cast<int>(slots.size());
    std::vector<float> k(static_cast<size_t>(length) * kKvHeads * kHeadDim), v(k.size());
    for (int layer = 0; layer < config.num_layers; ++layer) {
      for (float& x : k) x = normal(rng);
      for (float& x : v) x = normal(rng);
      if (!cuda) {
        RETURN_IF_ERROR(StoreKvHost(cache->view(), layer, slots,
                                    KvRows{k.data(), v.data(), DType::kFloat32, 0}));
        continue;
      }
      DeviceBuffer dk, dv, dslots;
      RETURN_IF_ERROR(Upload(k.data(), k.size() * sizeof(float), &dk, "K rows"));
      RETURN_IF_ERROR(Upload(v.data(), v.size() * sizeof(float), &dv, "V rows"));
      RETURN_IF_ERROR(Upload(slots.data(), slots.size() * sizeof(int32_t), &dslots, "slots"));
      RETURN_IF_ERROR(StoreKvCuda(cache->view(), layer, dslots.as<const int32_t>(), length,
                                  KvRows{dk.get(), dv.get(), DType::kFloat32, 0}, nullptr,
                                  QuantRounding::kNearestEven, skipped_tokens.as<int32_t>()));
      CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());  // before dk, dv and dslots are freed
    }
    return absl::OkStatus();
  };
  for (int length : {5, 12}) {
    ASSIGN_OR_RETURN(const int32_t request, cache->requests().AllocateRequest());
    rows.push_back({request, 0});  // listed now so that an error below gives it back
    std::vector<int32_t> slots;    // the row's new slots, allocated and appended together
    RETURN_IF_ERROR(cache->AppendNewSlots(request, length, &slots));
    rows.back().seq_len = length;
    RETURN_IF_ERROR(store_new_tokens(slots));
  }
  // A second sample of the 12-token request, branching after its 8th token: the fork shares
  // those 8 slots (and their K/V) and writes only its own 3 new tokens. Each shared slot goes
  // back to the allocator when the last of the two rows lets it go.
  {
    ASSIGN_OR_RETURN(const int32_t fork, cache->ForkRequest(rows[1].request, 8));
    rows.push_back({fork, 8});
    std::vector<int32_t> slots;
    RETURN_IF_ERROR(cache->AppendNewSlots(fork, 3, &slots));
    rows.back().seq_len = 11;
    RETURN_IF_ERROR(store_new_tokens(slots));
    std::printf("request %d: forked from request %d after 8 tokens, %lld slots in use\n", fork,
                rows[1].request, static_cast<long long>(cache->slots().used_count()));
  }
  if (cuda) {
    int32_t skipped = 0;
    CUDA_RETURN_IF_ERROR(
        cudaMemcpy(&skipped, skipped_tokens.get(), sizeof(int32_t), cudaMemcpyDeviceToHost));
    if (skipped != 0) {
      return absl::InternalError(
          absl::StrCat(skipped, " tokens' K/V were not stored: their slots are outside the pool"));
    }
    RETURN_IF_ERROR(cache->requests().SyncToDevice(nullptr));
  }

  // 3. The backend, created once for the largest batch and context it will see.
  AttentionShape shape;
  shape.q_heads = kQHeads;
  shape.kv_heads = kKvHeads;
  shape.head_dim = kHeadDim;
  shape.max_batch = 4;
  shape.max_seq_len = config.max_seq_len;
  BackendOptions options;
  options.io_dtype = cuda ? DType::kFloat16 : DType::kFloat32;
  ASSIGN_OR_RETURN(
      std::unique_ptr<DecodeAttentionBackend> backend,
      CreateDecodeAttentionBackend(cuda ? "cuda" : "cpu", BindingFor(*cache), shape, options));

  // 4. One decode step: Plan once per step, Run once per layer.
  const size_t n = rows.size() * kQHeads * kHeadDim;
  std::vector<float> q(n), out(n);
  for (float& x : q) x = normal(rng);
  // The cuda backend takes fp16 q: round here, so that the check below sees the same q.
  if (cuda) {
    for (float& x : q) x = HalfBitsToFloat(FloatToHalfBits(x));
  }
  RETURN_IF_ERROR(backend->Plan(rows, nullptr));
  if (!cuda) {
    RETURN_IF_ERROR(backend->Run(/*layer=*/1, q.data(), out.data(), nullptr));
  } else {
    std::vector<uint16_t> q16(n), out16(n);
    for (size_t i = 0; i < n; ++i) q16[i] = FloatToHalfBits(q[i]);
    DeviceBuffer dq, dout;
    RETURN_IF_ERROR(Upload(q16.data(), n * sizeof(uint16_t), &dq, "q"));
    RETURN_IF_ERROR(dout.Allocate(n * sizeof(uint16_t), "out"));
    RETURN_IF_ERROR(backend->Run(/*layer=*/1, dq.get(), dout.get(), nullptr));
    CUDA_RETURN_IF_ERROR(
        cudaMemcpy(out16.data(), dout.get(), n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; ++i) out[i] = HalfBitsToFloat(out16[i]);
  }
  for (size_t b = 0; b < rows.size(); ++b) {
    std::printf("row %zu (request %d, %d tokens): out[0][0..3] = %+.4f %+.4f %+.4f %+.4f\n", b,
                rows[b].request, rows[b].seq_len, out[b * kQHeads * kHeadDim + 0],
                out[b * kQHeads * kHeadDim + 1], out[b * kQHeads * kHeadDim + 2],
                out[b * kQHeads * kHeadDim + 3]);
  }

  // 5. A check an embedder can copy: the same attention in float64 over the cache's
  //    dequantized K/V (the backend reads the same values), as a relative error per row.
  for (size_t b = 0; b < rows.size(); ++b) {
    ASSIGN_OR_RETURN(const double error,
                     ErrorAgainstFloat64(*cache, rows[b].request, cuda, &q[b * kQHeads * kHeadDim],
                                         &out[b * kQHeads * kHeadDim]));
    std::printf("row %zu: relative error against float64: %.2e\n", b, error);
  }

  // 6. Finished requests give their slots and rows back (every one, even after an error).
  std::move(release_on_error).Cancel();
  RETURN_IF_ERROR(release_requests());
  std::printf("free slots after the step: %lld of %lld\n",
              static_cast<long long>(cache->slots().free_count()),
              static_cast<long long>(cache->slots().capacity()));
  return absl::OkStatus();
}

}  // namespace
}  // namespace int4kv

int main(int argc, char** argv) {
  int4kv::ParseFlagsOnly(
      argc, argv,
      "Embeds the INT4 KV cache and a decode-attention backend without the server: stores "
      "K/V, runs one step, checks it against float64. Example: embed_example --backend=cuda");
  const std::string backend = absl::GetFlag(FLAGS_backend);
  if (backend != "cpu" && backend != "cuda") {
    std::fprintf(stderr, "--backend must be cpu or cuda, got '%s'\n", backend.c_str());
    return 2;
  }
  const absl::Status status = int4kv::Run(backend == "cuda");
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
