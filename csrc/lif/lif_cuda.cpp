// Torch binding of the CUDA LIF kernels (tks::lif_forward / tks::lif_backward for CUDA tensors):
// checks and allocation (lif_binding.h), the device guard, the current stream, and the launch
// error turned into a Python exception.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "lif/lif_binding.h"
#include "lif/lif_cuda.h"

namespace tks {
namespace lif {
namespace {

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

TensorTriple lif_forward_cuda_op(const at::Tensor& x_seq, const std::optional<at::Tensor>& v_init,
                                 const std::optional<at::Tensor>& decay, int64_t leak, double tau, bool decay_input,
                                 double v_threshold, double v_reset, bool soft_reset, bool detach_reset,
                                 int64_t surrogate, double alpha, bool store_v_seq, bool save_h,
                                 int64_t max_spike_count, double grad_min, double grad_max, bool count_lif_charge,
                                 bool /*save_x: for the autograd formula*/) {
  TORCH_CHECK(x_seq.is_cuda(), "tks::lif_forward: x_seq is on ", x_seq.device(), "; ",
              device_hint(c10::DeviceType::CUDA));
  const c10::cuda::CUDAGuard guard(x_seq.device());
  return lif_forward_impl(c10::DeviceType::CUDA, x_seq, v_init, decay, leak, tau, decay_input, v_threshold, v_reset,
                          soft_reset, detach_reset, surrogate, alpha, store_v_seq, save_h, max_spike_count, grad_min,
                          grad_max, count_lif_charge, [](DType dtype, const LIFParams& p, const LIFForwardArgs& a) {
                            const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
                            check_launch(lif_forward_cuda(dtype, p, a, stream), "tks::lif_forward");
                          });
}

TensorTriple lif_backward_cuda_op(const std::optional<at::Tensor>& grad_spikes, const std::optional<at::Tensor>& grad_v,
                                  const at::Tensor& h, const std::optional<at::Tensor>& x_seq,
                                  const std::optional<at::Tensor>& v_init, const std::optional<at::Tensor>& decay,
                                  int64_t leak, double tau, bool decay_input, double v_threshold, double v_reset,
                                  bool soft_reset, bool detach_reset, int64_t surrogate, double alpha,
                                  bool store_v_seq, at::ScalarType x_dtype, bool need_grad_decay,
                                  int64_t max_spike_count, double grad_min, double grad_max,
                                  bool count_lif_charge, bool recompute) {
  // with recompute h is an empty placeholder: x_seq places the op
  const at::Tensor& where = recompute && x_seq.has_value() ? *x_seq : h;
  TORCH_CHECK(where.is_cuda(), "tks::lif_backward: ", recompute ? "x_seq" : "h", " is on ", where.device(), "; ",
              device_hint(c10::DeviceType::CUDA));
  const c10::cuda::CUDAGuard guard(where.device());
  const auto options = where.options().dtype(at::kFloat);
  return lif_backward_impl(
      c10::DeviceType::CUDA, grad_spikes, grad_v, h, x_seq, v_init, decay, leak, tau, decay_input, v_threshold,
      v_reset, soft_reset, detach_reset, surrogate, alpha, store_v_seq, x_dtype, need_grad_decay, max_spike_count,
      grad_min, grad_max, count_lif_charge, recompute,
      [&options](DType dtype, const LIFParams& p, const LIFBackwardArgs& args) {
        LIFBackwardArgs a = args;
        TORCH_CHECK(a.h != nullptr || a.T <= kCudaRecomputeMaxT, "tks::lif_backward: recompute=True on CUDA takes "
                    "T <= ", kCudaRecomputeMaxT, " steps, got T=", a.T, " (save H for longer sequences)");
        at::Tensor workspace;
        const int64_t size = lif_backward_cuda_workspace_size(dtype, a);
        if (size > 0) {
          workspace = at::empty({size}, options.dtype(at::kDouble));
          a.workspace = workspace.data_ptr<double>();
        }
        const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
        check_launch(lif_backward_cuda(dtype, p, a, stream), "tks::lif_backward");
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(tks, CUDA, m) {
  m.impl("lif_forward", &lif_forward_cuda_op);
  m.impl("lif_backward", &lif_backward_cuda_op);
}

}  // namespace lif
}  // namespace tks
