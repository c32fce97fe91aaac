// The CUDA stream and event handle types, without pulling CUDA headers into every includer.
#ifndef INT4KV_COMMON_CUDA_STREAM_H_
#define INT4KV_COMMON_CUDA_STREAM_H_

struct CUstream_st;
struct CUevent_st;

namespace int4kv {

// Same type as cudaStream_t; nullptr is the legacy default stream.
using CudaStream = CUstream_st*;
// Same type as cudaEvent_t.
using CudaEvent = CUevent_st*;

}  // namespace int4kv

#endif  // INT4KV_COMMON_CUDA_STREAM_H_
