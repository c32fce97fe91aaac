// Page-table orders for decode_bench and the backend's GPU tests: which slot each token of
// their rows takes.
#ifndef INT4KV_BACKEND_BENCH_PAGE_TABLES_H_
#define INT4KV_BACKEND_BENCH_PAGE_TABLES_H_

#include <cstdint>
#include <random>
#include <vector>

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

}  // namespace int4kv

#endif  // INT4KV_BACKEND_BENCH_PAGE_TABLES_H_
