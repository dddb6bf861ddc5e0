// Host launchers of the CUDA LIF kernels (lif_kernel.cu). No torch headers: the torch binding
// (lif_cuda.cpp) checks the tensors, allocates, and passes raw pointers and the current stream.
#pragma once

#include <cuda_runtime.h>

#include "lif/lif_kernel.h"

namespace tks {
namespace lif {

// The most steps the backward's recompute (args.h == nullptr, save="x") takes on CUDA: its tile of H
// is T * 256 * VEC floats of shared memory (32 KiB at most). tks_kernels/lif/config.py
// CUDA_RECOMPUTE_MAX_T is the same number; above it the Python side saves H.
constexpr int64_t kCudaRecomputeMaxT = 32;

// Forward over all T in one launch. Returns the launch error (cudaSuccess when N == 0).
cudaError_t lif_forward_cuda(DType dtype, const LIFParams& p, const LIFForwardArgs& a, cudaStream_t stream);

// Doubles of a.workspace the backward needs: per-block partial sums of the leak's gradient and
// the arrival counter of the in-launch reduction; 0 when a.grad_decay is nullptr.
int64_t lif_backward_cuda_workspace_size(DType dtype, const LIFBackwardArgs& a);

// Backward over all T (in reverse) in one launch; with a.grad_decay, the last block to finish
// sums the per-block partials in a fixed order (deterministic) and writes *a.grad_decay.
cudaError_t lif_backward_cuda(DType dtype, const LIFParams& p, const LIFBackwardArgs& a, cudaStream_t stream);

}  // namespace lif
}  // namespace tks
