// An instantiated CUDA graph captured from a stream, owned.
//
//   ASSIGN_OR_RETURN(CudaGraph graph, CudaGraph::Capture(stream, [&] { return LaunchStep(); }));
//   RETURN_IF_ERROR(graph.Launch(stream));
//
// Capture uses cudaStreamCaptureModeThreadLocal: a cudaMalloc (or another unsafe call) from the
// capturing thread fails the capture instead of silently running once.
#ifndef INT4KV_SERVER_CUDA_CUDA_GRAPH_H_
#define INT4KV_SERVER_CUDA_CUDA_GRAPH_H_

#include <cuda_runtime.h>

#include <functional>
#include <utility>

#include "absl/status/statusor.h"
#include "common/cuda_check.h"
#include "common/cuda_stream.h"

namespace int4kv {

class CudaGraph {
 public:
  CudaGraph() = default;
  ~CudaGraph() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
  }
  CudaGraph(CudaGraph&& other) noexcept : exec_(std::exchange(other.exec_, nullptr)) {}
  CudaGraph& operator=(CudaGraph&& other) noexcept {
    if (this != &other) {
      if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
      exec_ = std::exchange(other.exec_, nullptr);
    }
    return *this;
  }
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Captures what `launch` queues on `stream` (nothing runs) and instantiates it. When launch
  // fails the capture is ended and discarded, and launch's error is returned.
  static absl::StatusOr<CudaGraph> Capture(CudaStream stream,
                                           const std::function<absl::Status()>& launch) {
    CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    const absl::Status launched = launch();
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
    if (!launched.ok() || ended != cudaSuccess) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      cudaGetLastError();  // Clear the (non-sticky) error a failed capture leaves.
      if (!launched.ok()) return launched;
      return CudaStatus(ended, "cudaStreamEndCapture");
    }
    CudaGraph result;
    const cudaError_t instantiated = cudaGraphInstantiate(&result.exec_, graph, 0);
    cudaGraphDestroy(graph);
    if (instantiated != cudaSuccess) return CudaStatus(instantiated, "cudaGraphInstantiate");
    return result;
  }

  absl::Status Launch(CudaStream stream) const {
    CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec_, stream));
    return absl::OkStatus();
  }
  bool valid() const { return exec_ != nullptr; }

 private:
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace int4kv

#endif  // INT4KV_SERVER_CUDA_CUDA_GRAPH_H_
