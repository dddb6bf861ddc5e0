// Torch binding of the C++ CPU LIF kernels (tks::lif_forward / tks::lif_backward for CPU tensors):
// checks and allocation (lif_binding.h); the kernels are in lif_cpu_kernel.cpp.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "lif/lif_binding.h"
#include "lif/lif_cpu.h"

namespace tks {
namespace lif {
namespace {

TensorTriple lif_forward_cpu_op(const at::Tensor& x_seq, const std::optional<at::Tensor>& v_init,
                                const std::optional<at::Tensor>& decay, int64_t leak, double tau, bool decay_input,
                                double v_threshold, double v_reset, bool soft_reset, bool detach_reset,
                                int64_t surrogate, double alpha, bool store_v_seq, bool save_h, int64_t max_spike_count,
                                double grad_min, double grad_max, bool count_lif_charge,
                                bool /*save_x: for the autograd formula*/) {
  return lif_forward_impl(c10::DeviceType::CPU, x_seq, v_init, decay, leak, tau, decay_input, v_threshold, v_reset,
                          soft_reset, detach_reset, surrogate, alpha, store_v_seq, save_h, max_spike_count, grad_min,
                          grad_max, count_lif_charge, lif_forward_cpu);
}

TensorTriple lif_backward_cpu_op(const std::optional<at::Tensor>& grad_spikes, const std::optional<at::Tensor>& grad_v,
                                 const at::Tensor& h, const std::optional<at::Tensor>& x_seq,
                                 const std::optional<at::Tensor>& v_init, const std::optional<at::Tensor>& decay,
                                 int64_t leak, double tau, bool decay_input, double v_threshold, double v_reset,
                                 bool soft_reset, bool detach_reset, int64_t surrogate, double alpha, bool store_v_seq,
                                 at::ScalarType x_dtype, bool need_grad_decay, int64_t max_spike_count,
                                 double grad_min, double grad_max, bool count_lif_charge, bool recompute) {
  return lif_backward_impl(c10::DeviceType::CPU, grad_spikes, grad_v, h, x_seq, v_init, decay, leak, tau, decay_input,
                           v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha, store_v_seq, x_dtype,
                           need_grad_decay, max_spike_count, grad_min, grad_max, count_lif_charge, recompute,
                           lif_backward_cpu);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tks, m) {
  // Which build of the CPU kernels runs: "avx512", "avx2" or "generic" (TKS_CPU_ISA caps it).
  m.def("lif_cpu_isa() -> str", [] { return std::string(lif_cpu_isa()); });
}

TORCH_LIBRARY_IMPL(tks, CPU, m) {
  m.impl("lif_forward", &lif_forward_cpu_op);
  m.impl("lif_backward", &lif_backward_cpu_op);
}

}  // namespace lif
}  // namespace tks
