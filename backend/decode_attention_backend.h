// The decode-attention backend: the product's C++ face for server builders.
//
// A backend reads a paged INT4 KV cache (it never owns or allocates cache memory) and
// computes, for each batch row, attention of that row's query heads over its context:
//
//   out[b, h, :] = sum_t softmax_t(scale * q[b, h, :] . K[slot(b, t), h / G, :])
//                        * V[slot(b, t), h / G, :]
//
// with G = q_heads / kv_heads (grouped-query attention) and slot(b, t) read from the
// req_to_token table. Usage (create_backend.h; embed_example.cc shows every step):
//
//   auto backend = CreateDecodeAttentionBackend("cuda", BindingFor(cache), shape, options);
//   per decode step, once the step's slots are appended:
//     cache.requests().SyncToDevice(stream);  // device caches: the table's new entries
//     backend->Plan(rows, stream);             // host: batch metadata into fixed buffers
//     for each layer:
//       StoreKvCuda(cache.view(), layer, ...);              // the step's new K/V, any time
//                                                           // before the Run that reads it
//       backend->Run(layer, q, out, stream);                // allocation-free,
//                                                           // graph-capturable
//
// Thread ownership: a backend is used by one thread at a time. Plan reads the binding's
// RequestTable (its rows' bookkeeping), so it runs where nothing changes the cache meanwhile:
// the thread that owns the cache. Backends may be created on any thread. All of a backend's
// steps share its device buffers, so one step is in flight at a time: two batches overlapped
// on two streams need a backend each.
#ifndef INT4KV_BACKEND_DECODE_ATTENTION_BACKEND_H_
#define INT4KV_BACKEND_DECODE_ATTENTION_BACKEND_H_

#include <array>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/cuda_stream.h"
#include "common/dtype.h"
#include "kv_cache/int4_layout.h"
#include "kv_cache/kv_pool.h"

namespace int4kv {

class KvCache;
class RequestTable;

// Query heads that may share one KV head (AttentionShape.q_heads / kv_heads).
constexpr int32_t kMaxQueryHeadsPerKvHead = 16;

// The most rows of a step (AttentionShape.max_batch).
constexpr int32_t kMaxBatch = 65536;

// The most chunks a row may take in a batch-invariant cuda backend
// (BackendOptions.batch_invariant_splits): a 65,536-token row in 64-token chunks.
constexpr int32_t kMaxBatchInvariantSplits = 1024;

// The most worker threads of a cpu backend (BackendOptions.cpu_threads): more would only wait
// on each other, and far more fail to start.
constexpr int32_t kMaxCpuThreads = 1024;

// The largest AttentionShape::softmax_scale. Far above any model's scale (1 / sqrt(head_dim)
// and its variants are below 1); larger ones only push scores toward float's range, and from
// about 2.4e38 the kernels' scale times log2(e) is infinite and every output NaN.
constexpr float kMaxSoftmaxScale = 1e4f;

// The range of a nonzero AttentionShape::logit_soft_cap. Models cap at 20-50 (Gemma 2: 50,
// Grok-1: 30). Under kMinLogitSoftCap every weight of a row would be within e^0.02 of every
// other, attention a plain mean. The cuda kernels form a capped score with an absolute error of
// about c x 2^-21 (2.4e-5 at c = 50, 4.8e-4 at kMaxLogitSoftCap), which above that would pass
// the error of the fp16 keys themselves on ordinary scores.
constexpr float kMinLogitSoftCap = 1e-2f;
constexpr float kMaxLogitSoftCap = 1e3f;

// Whether `cap` is a valid AttentionShape::logit_soft_cap: 0, or in [kMinLogitSoftCap,
// kMaxLogitSoftCap] (NaN is not).
inline bool IsValidLogitSoftCap(double cap) {
  return cap == 0 || (cap >= kMinLogitSoftCap && cap <= kMaxLogitSoftCap);
}

// Run's FailedPrecondition message when no plan stands (none succeeded yet, or the last failed).
inline constexpr char kRunWithoutPlan[] =
    "Run without a plan: no Plan has succeeded, or the last one failed";

// Shape of the attention a backend computes, fixed at creation.
struct AttentionShape {
  int32_t q_heads = 0;      // multiple of kv_heads; q_heads / kv_heads <= kMaxQueryHeadsPerKvHead
  int32_t kv_heads = 0;     // must equal the cache's kv_heads
  int32_t head_dim = 0;     // must equal the cache's head_dim
  int32_t max_batch = 0;    // rows per Plan, in [1, kMaxBatch = 65536]
  int32_t max_seq_len = 0;  // longest context, <= the req_to_token row length
  float softmax_scale = 0;  // in [0, kMaxSoftmaxScale]; 0 means 1 / sqrt(head_dim)
  // Logit soft-capping (Gemma 2, Grok-1): 0 (the default) leaves scores as they are; a cap c
  // in [kMinLogitSoftCap, kMaxLogitSoftCap = 1000] makes each score c x tanh(score / c), where
  // score = softmax_scale x q . k, before the softmax. RunWithLse's log-sum-exps are over the
  // capped scores.
  float logit_soft_cap = 0;
};

// Where the cache lives, as the backend sees it: the pools and the req_to_token table, in
// the memory the backend reads (host for "cpu"; for "cuda", memory of the device current when
// the backend is created, which creation checks). Not owned: it must outlive every backend
// created from it.
// The entries a planned row attends ([first_token, seq_len)) are slots in [0, num_slots). cpu: Run
// answers InvalidArgument naming the first such row, the entry and its value, and leaves that row's
// output zero (the other rows are computed). cuda: entries are not checked; one
// outside the pool is read as the nearest slot of it (0 or num_slots - 1), so the row's output
// is wrong but nothing outside the pools is read (RequestTable::Append refuses such slots).
struct KvCacheBinding {
  KvCacheView view;
  const int32_t* req_to_token = nullptr;  // [max_requests][req_to_token_stride]
  int32_t max_requests = 0;
  int32_t req_to_token_stride = 0;  // entries per request row (its max_seq_len)
  // The table's host bookkeeping, when the binding comes from a KvCache (BindingFor): Plan
  // then also rejects a row whose request is not live or has fewer tokens than its seq_len,
  // whose entries would be another request's slots or padding. nullptr: not checked.
  const RequestTable* requests = nullptr;
};

// The binding of a KvCache: host pools and table for host caches, device pools and the
// device mirror of the table for device caches.
KvCacheBinding BindingFor(const KvCache& cache);

// The attention shape over `cache`: its kv_heads, head_dim and max_seq_len, with `q_heads`
// query heads and `max_batch` rows per Plan (default softmax scale).
AttentionShape ShapeFor(const KvCache& cache, int32_t q_heads, int32_t max_batch);

// One batch row of a decode step.
struct DecodeRow {
  int32_t request = 0;  // row of req_to_token
  int32_t seq_len = 0;  // context length in tokens; 0 marks a padded row (output zeros)
  // The row attends tokens [first_token, seq_len) of its context, in [0, seq_len]: 0 is the
  // whole context; seq_len - W (when positive) a sliding window of W tokens; a prefix attended
  // elsewhere leaves the rest, to be combined with it through RunWithLse's log-sum-exps. A row
  // that attends no token (first_token == seq_len) gives zeros and an lse of -inf, as padded
  // rows do.
  int32_t first_token = 0;

  // The tokens the row attends: seq_len - first_token (0 for padded rows).
  int32_t attended_tokens() const { return seq_len - first_token; }
};

struct BackendOptions {
  // Element type of q and out. cpu: float32. cuda: float16 or bfloat16; the cuda kernels
  // compute in fp16 range either way (bf16 q and cache parameters are converted to fp16), so
  // |q|, K or V values above 65504 give inf or NaN, and values below fp16's normal range
  // (6.1e-5) keep fewer significant bits: a row whose q, or whose V throughout, is that small
  // loses relative precision, with bf16 scales as with fp16 ones (scales below 3e-8 read as 0).
  DType io_dtype = DType::kFloat32;
  // cpu only: accumulate in float64 (the test oracle) instead of float32 (serving). In float32
  // a score q . k past float's range (about 3.4e38: q and K of 1e20, say) gives inf or NaN.
  bool cpu_float64 = false;
  // cpu only: worker threads, in [0, kMaxCpuThreads]; 0 means one per hardware thread. Every
  // backend checks the ranges of both backends' fields (ValidateBackendOptions).
  int32_t cpu_threads = 0;
  // cuda only: 0 (the default) cuts each row into chunks sized for the whole step, so that
  // any batch fills the device; a row's output may then differ in its last bits with what
  // else the step holds. N in [1, kMaxBatchInvariantSplits] makes the backend batch-invariant:
  // each row is cut into at most N chunks by its own length alone and its partials are merged
  // in one fixed order, so its output is bitwise the same whatever else the batch holds
  // (alone, beside any rows, padded, in any batch size). Costs: workspace for max_batch x N
  // chunks (4 x q_heads x (head_dim + 1) bytes each), and speed where batch x N chunks give
  // the device too few (docs/PERFORMANCE.md). The cpu backend computes every row on its own
  // and is batch-invariant without it.
  int32_t batch_invariant_splits = 0;
  // Elements from one row of Run's q to the next (row b starts at q + b x q_row_stride), and of
  // out; 0 means q_heads x head_dim (dense rows), else at least that. A wider stride reads q
  // straight out of a larger buffer (the query part of a fused QKV projection's output, whose
  // rows also hold K and V) and writes out into one, leaving the elements between rows as
  // they were. cuda: q_row_stride a multiple of 8 (every row 16-byte aligned). q and out
  // given as one buffer (attention in place) need the same stride.
  int64_t q_row_stride = 0;
  int64_t out_row_stride = 0;
};

// The most elements BackendOptions.q_row_stride and out_row_stride may step a row.
constexpr int64_t kMaxRowStride = int64_t{1} << 31;

// Memory a backend allocated at creation and holds until it is destroyed (Plan and Run allocate
// none), for a server that budgets the device's memory before sizing its KV pool.
struct BackendMemory {
  int64_t device_bytes = 0;       // cuda: the plan's device copy, the partial outputs and lses
  int64_t pinned_host_bytes = 0;  // cuda: the plan's staging area
};

class DecodeAttentionBackend {
 public:
  virtual ~DecodeAttentionBackend() = default;

  virtual absl::string_view name() const = 0;
  const AttentionShape& shape() const { return shape_; }

  // Records the batch for the following Run calls (the rows are copied: they need to
  // outlive only the call; a second Plan replaces the first). rows.size() <= max_batch; each row's
  // seq_len in [0, max_seq_len], first_token in [0, seq_len] and request in [0, max_requests)
  // (any value when padded);
  // with the binding's `requests`, a row's request live and seq_len <= its length.
  // Bad rows give InvalidArgument naming the row and field. A binding that reads the table's
  // device mirror also needs seq_len <= what SyncToDevice has sent of the request
  // (FailedPrecondition otherwise). A Plan that returns an error leaves no plan: Run gives
  // FailedPrecondition until a Plan succeeds, as it does before the first one, so a step
  // whose Plan failed never runs the previous step's rows against its own q and out.
  // Rows are checked here only (the cpu backend checks the table's entries at Run, the cuda
  // kernels read them clamped into the pool): from Plan until the step's last Run has run on
  // the device, the planned requests' table rows and slots must stay as they were (not
  // freed, reused or rewritten), and every slot a row reads must hold its token's K/V, stored
  // before the Run that reads it, or Run reads other values. A host that frees a request
  // right after queueing its last Run is safe when every later write to the table and the
  // pools (SyncToDevice, StoreKvCuda) is queued on the same stream, after that Run.
  // cuda: copies the metadata into fixed device buffers, ordered on `stream`. It waits on the
  // host for the previous Plan's copy to have left its pinned staging area, which keeps the
  // host at most about one step ahead of the device, and is therefore called
  // outside stream capture (FailedPrecondition on a capturing stream; a replayed graph takes
  // the plan of the Plan call before the replay, and after a failed Plan whatever the device
  // buffers hold: the last successful plan unless a copy failed). Every step reuses the same
  // device buffers (the plan, the partial outputs), so a Plan's copy must reach the device
  // after the previous step's last Run or replay, and a step's Runs before the next Plan's
  // copy: one stream for every Plan, Run and replay of a backend gives that order; across
  // streams the caller gives it (an event), or a step's kernels read another step's plan. Plan
  // and Run need the device that was current at creation to be current (FailedPrecondition
  // naming both devices otherwise).
  virtual absl::Status Plan(absl::Span<const DecodeRow> rows, CudaStream stream) = 0;

  // q: [batch, q_heads, head_dim], out: [batch, q_heads, head_dim] of io_dtype, in the
  // backend's memory (host for cpu, device for cuda); batch = rows in the last Plan; rows
  // BackendOptions.q_row_stride and out_row_stride elements apart. Allocates nothing. q and out
  // may be the same buffer (attention in place), else their spans (from the first row's start
  // to the last row's end, the gaps of wider strides included) must not overlap. cuda: q must be
  // 16-byte aligned, as cudaMalloc's buffers are, and out aligned to its elements (InvalidArgument
  // otherwise); asynchronous on `stream` and capturable in a CUDA graph. A captured Run keeps
  // the batch size of the Plan before the capture: before each replay, Plan exactly that many
  // rows (pad with seq_len 0 rows), on the same stream as the replay, after SyncToDevice and
  // the StoreKvCuda calls the step reads. A graph captured after a Plan of 0 rows holds no
  // kernels (Run launches nothing for an empty batch). A captured graph uses the backend's
  // device buffers: destroy it before the backend. q and out must be device memory; a host
  // pointer makes the kernels fault, which leaves the CUDA context unusable. Plan and
  // SyncToDevice wait on the host for an event (above), which CUDA may refuse while another
  // thread captures in cudaStreamCaptureModeGlobal (its rule for potentially unsafe calls):
  // capture in thread-local or relaxed mode, or not at the same time.
  // Implementations override RunWithLse; Run is RunWithLse without the log-sum-exps.
  absl::Status Run(int32_t layer, const void* q, void* out, CudaStream stream) {
    return RunWithLse(layer, q, out, /*lse=*/nullptr, stream);
  }

  // Run, and also the log-sum-exp of each (row, query head) into `lse` when it is not null:
  //   lse[b, h] = log(sum_t exp(scale * q[b, h, :] . K[slot(b, t), h / G, :]))   (natural log,
  //   t over the row's attended tokens [first_token, seq_len))
  // float32 [batch, q_heads] in the backend's memory, 4-byte aligned, overlapping neither q's
  // nor out's span (InvalidArgument otherwise); -inf for rows that attend no token (padded, or
  // first_token == seq_len; on the cpu backend also rows whose table points outside the pool).
  // With it, attention over disjoint parts of a context
  // (a shared prefix and each request's own tokens, say, or the cache and tokens not stored in
  // it) combines into attention over their union: for parts i with outputs out_i and lse_i,
  //   lse = log(sum_i exp(lse_i)),   out = sum_i exp(lse_i - lse) * out_i.
  // cuda: computed in fp32 from the same partial results as out (the scores of fp16 operands);
  // the kernels are the same with and without it, so out is bitwise the same either way.
  virtual absl::Status RunWithLse(int32_t layer, const void* q, void* out, float* lse,
                                  CudaStream stream) = 0;

  // Rows of the last successful Plan, which Run computes; -1 when there is none (before the
  // first Plan, or after one that failed). A caller replaying a captured graph can compare it
  // with the rows the graph was captured for before each replay.
  int32_t planned_rows() const { return planned_rows_; }

  // What this backend allocated at creation, in bytes as requested from CUDA (the driver may
  // round each allocation up). cpu: none in device or pinned memory.
  virtual BackendMemory memory() const { return {}; }

 protected:
  explicit DecodeAttentionBackend(const AttentionShape& shape) : shape_(shape) {}

  AttentionShape shape_;
  int32_t planned_rows_ = -1;  // set by each implementation's Plan; -1: no plan
};

// Shared validation, used by every implementation.
// The binding's pointers a backend reads, with their field names: the three pools, then the
// req_to_token table. Null ones are included (ValidateShape says which may be null).
struct BindingPointer {
  const char* field;  // "view.data", "view.scales", "view.zeros" or "req_to_token"
  const void* pointer;
  bool pool;  // one of the view's pools (else the table)
};
std::array<BindingPointer, 4> BindingPointers(const KvCacheBinding& cache);
absl::Status ValidateShape(const AttentionShape& shape, const KvCacheBinding& cache);
// The ranges of every BackendOptions field for `shape`, whichever backend is created, so that
// options set once are refused or accepted alike when the backend is switched by name. What
// each backend accepts of io_dtype and of the strides' alignment is its own check.
absl::Status ValidateBackendOptions(const BackendOptions& options, const AttentionShape& shape);
// The elements between consecutive rows of q and out: the options' strides, or dense rows
// (q_heads x head_dim) where they are 0.
struct RowStrides {
  int64_t q;
  int64_t out;
};
RowStrides ResolvedRowStrides(const BackendOptions& options, const AttentionShape& shape);
// InvalidArgument naming the first of the binding's pointers that a backend reading
// `memory` cannot read: device memory for kHost (checked only where a CUDA device exists,
// through cudaPointerGetAttributes, which starts a CUDA context);
// for kDevice, pageable host memory and memory of a device other than the current one
// (managed and mapped pinned memory pass).
absl::Status CheckBindingMemory(const KvCacheBinding& cache, MemoryKind memory,
                                absl::string_view backend);
absl::Status ValidateRows(absl::Span<const DecodeRow> rows, const AttentionShape& shape,
                          const KvCacheBinding& cache);
// Run's q and out beyond their own checks, for a step of `batch` rows of `io_element_bytes`
// elements spaced by `strides`: q and out one buffer with one stride, or spans apart (a span
// runs from the first row's start to the last row's end); `lse` (when not null) 4-byte aligned
// and clear of both spans.
absl::Status ValidateRunBuffers(const void* q, const void* out, const float* lse, int32_t batch,
                                const AttentionShape& shape, const RowStrides& strides,
                                int io_element_bytes);
float SoftmaxScale(const AttentionShape& shape);

}  // namespace int4kv

#endif  // INT4KV_BACKEND_DECODE_ATTENTION_BACKEND_H_
