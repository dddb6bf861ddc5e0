// The fused multi-step LIF: parameters, kernel arguments and the per-step math shared by the
// CUDA kernels (lif_kernel.cu) and the C++ CPU kernels (lif_cpu.cpp). Plain C++, no torch headers.
//
// Layout: the input is [T, N] rows (each step contiguous, time stride free); every other tensor
// is contiguous [T, N] or [N]. State and arithmetic are fp32; offsets are 64-bit.
#pragma once

#include <cstdint>

#include "lif/surrogate.h"

namespace tks {
namespace lif {

// How the leak enters the charge step: tks_kernels/lif/config.py LEAK_IF / LEAK_DIV / LEAK_MUL.
enum Leak : int { kLeakIF = 0, kLeakDiv = 1, kLeakMul = 2 };

// Input/output element type of x_seq, spikes and grad_x (state is always fp32).
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

struct LIFParams {
  int leak;            // Leak
  bool decay_input;
  bool soft_reset;
  bool detach_reset;
  bool store_v_seq;
  int surrogate;       // Surrogate
  float tau;           // kLeakDiv only
  float v_threshold;
  float v_reset;       // V_r: the hard-reset value, 0 for soft reset
  float alpha;
  // Integer spike counts (I-LIF) when max_spike_count > 0, else binary spikes.
  int64_t max_spike_count;
  float count;          // max_spike_count as fp32 (exact: at most 2^24)
  float count_decay;    // kLeakDiv: fp32(1 - 1/tau), rounded once from double as spikingjelly's reference
  float grad_min;       // the window on H / v_threshold where dC/dH = 1 / v_threshold
  float grad_max;
  float inv_threshold;  // fp32(1 / v_threshold)
  bool count_lif_charge;  // counts charged as the LIF, V - V/tau + X (spikingjelly's single-step ILIFNode)
};

struct LIFForwardArgs {
  const void* x;          // [T, N] rows, element (t, n) at x[t * x_stride_t + n]
  const float* v_init;    // [N] or nullptr (start at v_reset)
  const float* decay;     // 0-dim, kLeakMul only (a device pointer on the GPU)
  void* spikes;           // [T, N], x's dtype
  float* v_out;           // [T, N] if store_v_seq else [N]
  float* h;               // [T, N] (the charged potential, saved for backward) or nullptr
  int64_t T, N, x_stride_t;
};

struct LIFBackwardArgs {
  const void* grad_spikes;  // [T, N] x's dtype, or nullptr (spikes unused)
  const float* grad_v;      // [T, N] if store_v_seq else [N], or nullptr (v unused)
  const float* h;           // [T, N], or nullptr: recompute H from x and v_init (save="x")
  const void* x;            // [T, N] rows (x_stride_t), x's dtype: the recompute, or a learnable leak with decay_input
  const float* v_init;      // [N] or nullptr (V_r): the recompute or a learnable leak, else unused
  const float* decay;       // 0-dim, kLeakMul only
  void* grad_x;             // [T, N], x's dtype
  float* grad_v_init;       // [N]
  // The learnable leak's gradient, or nullptr: summed per neuron in fp64 and reduced in the launch.
  float* grad_decay;        // 0-dim
  double* workspace;        // GPU: lif_backward_cuda_workspace_size(dtype, args) doubles; CPU: unused
  int64_t T, N, x_stride_t;
};

// ---------------------------------------------------------------- the per-step math
// The same operation order as tks_kernels/lif/reference.py, so fp32 results agree bit for bit.
// Compiled without FP contraction (-ffp-contract=off, nvcc --fmad=false) and with IEEE division.

// H[t] from V[t-1] and X[t].
TKS_HOST_DEVICE float lif_charge(int leak, bool decay_input, float v, float x, float tau, float decay, float v_r) {
  if (leak == kLeakIF) return v + x;
  if (leak == kLeakDiv) return decay_input ? v + (x - (v - v_r)) / tau : v - (v - v_r) / tau + x;
  return decay_input ? v + (x - (v - v_r)) * decay : v - (v - v_r) * decay + x;
}

// V[t] from H[t] and the spike: hard reset to V_r, or soft reset (subtract the threshold).
TKS_HOST_DEVICE float lif_reset(bool soft_reset, float h, bool spike, float v_threshold, float v_r) {
  return spike ? (soft_reset ? h - v_threshold : v_r) : h;
}

// dV[t]/dH[t] through the reset, given the surrogate's sg = g'(H - V_th).
TKS_HOST_DEVICE float lif_dv_dh(bool soft_reset, bool detach_reset, float v_threshold, float v_r, float h, bool spike,
                                float sg) {
  if (soft_reset) return detach_reset ? 1.0f : 1.0f - v_threshold * sg;
  const float keep = spike ? 0.0f : 1.0f;
  return detach_reset ? keep : keep + (v_r - h) * sg;
}

// ---------------------------------------------------------------- integer spike counts (I-LIF)
// spikingjelly 2.0.0's _ops/ilif arithmetic: H = (1 - 1/tau) * V + X (decay = fp32(1 - 1/tau) for a
// float tau, 1 - decay_tensor for a learnable leak, no leak for IF), C = round(clamp(H / V_th, 0, D))
// with round half to even, V = H - C * V_th.

// H[t] from V[t-1] and X[t]; `decay` is the factor of V (unused for IF).
TKS_HOST_DEVICE float count_charge(int leak, float v, float x, float decay) {
  return leak == kLeakIF ? v + x : decay * v + x;
}

// round(clamp(scaled, 0, count)) as torch.clamp then torch.round: NaN stays NaN (the compares are
// false for it), ties to even. Below 2^23, (y + 2^23) - 2^23 rounds y to an integer in the current
// rounding mode (to nearest, ties to even) with two adds, which vectorise; from 2^23 on every fp32
// is an integer already.
TKS_HOST_DEVICE float spike_count(float scaled, float count) {
  float y = scaled < 0.0f ? 0.0f : scaled;
  y = y > count ? count : y;
  const float kTwo23 = 8388608.0f;
  return y < kTwo23 ? (y + kTwo23) - kTwo23 : y;
}

// dC/dH: 1 / V_th inside the window grad_min <= H / V_th <= grad_max (NaN is outside), else 0.
TKS_HOST_DEVICE float count_grad(float scaled, float grad_min, float grad_max, float inv_threshold) {
  return scaled >= grad_min && scaled <= grad_max ? inv_threshold : 0.0f;
}

}  // namespace lif
}  // namespace tks
