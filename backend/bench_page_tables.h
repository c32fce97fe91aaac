// Page-table orders for decode_bench and the backend's GPU tests: which slot each token of
// their rows takes.
#ifndef INT4KV_BACKEND_BENCH_PAGE_TABLES_H_
#define INT4KV_BACKEND_BENCH_PAGE_TABLES_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/statusor.h"

namespace int4kv {

// Slots 1..capacity in the order the rows take them (the first row its first tokens, and so
// on): ascending when !random_pages; else permuted over the whole list (window 0, or a window
// of at least capacity) or only within each run of `window` consecutive slots, so that a
// table's spread over the pool can be set apart from its order. capacity >= 0, window >= 0.
std::vector<int32_t> BenchPageTableSlots(int64_t capacity, bool random_pages, int64_t window,
                                         std::mt19937& rng);

// Sorts each row's slots ascending within every run of `run` consecutive tokens of the row
// (run 0: the whole row), the rows taking `slots` in order, `lengths[r]` tokens each: a table
// over the same slots, read in address order (whole rows: as an allocator that hands a request
// ascending slots would leave it; runs of a chunk's length: as a kernel that sorted each chunk's
// entries would read it). Slots past the rows are left as they are. sum(lengths) <=
// slots.size(), run >= 0.
void SortRowSlots(const std::vector<int>& lengths, int64_t run, std::vector<int32_t>& slots);

// Slots for rows of `lengths` tokens as the server's scheduler leaves them on a pool that has
// served other requests (lengths' rows in order, sum(lengths) entries). A TokenSlotAllocator
// over slots 1..capacity first serves `churn_requests` requests of uniformly random sizes in
// [1, 2 * mean_request_tokens - 1], each reserving all its slots in one Allocate when admitted,
// as Scheduler::Admit does; a request that does not fit waits for randomly chosen running ones
// to finish and free theirs, and the last running ones finish in random order. Then each row
// reserves its whole length in one Allocate. Rows thus take runs of consecutive slots, in
// either direction (the allocator is a stack), whose lengths follow the served requests' sizes.
// Returns InvalidArgument, naming the argument, when capacity < sum(lengths), a length is
// negative, mean_request_tokens < 1 or churn_requests < 0, and the allocator's own error when it
// refuses the capacity.
absl::StatusOr<std::vector<int32_t>> ServedPageTableSlots(const std::vector<int>& lengths,
                                                          int64_t capacity,
                                                          int64_t mean_request_tokens,
                                                          int64_t churn_requests,
                                                          std::mt19937& rng);

}  // namespace int4kv

#endif  // INT4KV_BACKEND_BENCH_PAGE_TABLES_H_
