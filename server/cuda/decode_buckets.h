// Decode batch buckets: the batch sizes the CUDA model captures one graph for. A decode-only
// step of n tokens runs at the smallest bucket >= n, the extra rows padded (seq_len 0, K/V
// written to the reserved slot 0).
#ifndef INT4KV_SERVER_CUDA_DECODE_BUCKETS_H_
#define INT4KV_SERVER_CUDA_DECODE_BUCKETS_H_

#include <cstdint>
#include <vector>

namespace int4kv {

constexpr int32_t kLargestDecodeBucket = 256;

// 1, 2, 4, ..., 256, capped at max_batch (which ends the list when it is below 256 and not a
// power of two: max_batch 6 gives 1, 2, 4, 6). Empty for max_batch < 1.
inline std::vector<int32_t> DecodeBuckets(int32_t max_batch) {
  std::vector<int32_t> buckets;
  if (max_batch < 1) return buckets;
  const int32_t largest = max_batch < kLargestDecodeBucket ? max_batch : kLargestDecodeBucket;
  for (int32_t b = 1; b < largest; b *= 2) buckets.push_back(b);
  buckets.push_back(largest);
  return buckets;
}

// The smallest bucket >= n, or 0 when n exceeds the largest (the step then runs unpadded).
// buckets: ascending.
inline int32_t BucketFor(const std::vector<int32_t>& buckets, int32_t n) {
  for (const int32_t b : buckets) {
    if (b >= n) return b;
  }
  return 0;
}

}  // namespace int4kv

#endif  // INT4KV_SERVER_CUDA_DECODE_BUCKETS_H_
