// C++ CPU kernels of the fused multi-step LIF and their torch binding (tks::lif_forward /
// tks::lif_backward for CPU tensors).
//
// One pass over [T, N]: the neurons are cut into chunks of kChunk; threads (at::parallel_for, i.e.
// OpenMP in torch's build) take chunks, and each chunk walks time with its state in a small
// buffer that stays in L1. The inner loops run over the chunk's neurons with no loop-carried
// dependency and the options fixed outside them, so the compiler vectorises them.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "lif/lif_binding.h"

namespace tks {
namespace lif {
namespace {

constexpr int64_t kChunk = 512;

// Each parallel task gets at least this many (neuron, step) elements.
int64_t grain_chunks(int64_t T) { return std::max<int64_t>(1, 65536 / (kChunk * T)); }

template <typename scalar_t>
inline float to_float(scalar_t v) {
  return static_cast<float>(v);
}

template <typename scalar_t, int LEAK, bool DECAY_INPUT>
void forward_chunk(const LIFParams& p, const LIFForwardArgs& a, float decay, int64_t n0, int64_t len) {
  alignas(64) float v_local[kChunk];
  alignas(64) float h_local[kChunk];
  const float v_th = p.v_threshold, v_r = p.v_reset, tau = p.tau;
  const bool soft = p.soft_reset, store_v_seq = p.store_v_seq;
  const scalar_t one = static_cast<scalar_t>(1.0f), zero = static_cast<scalar_t>(0.0f);
  if (a.v_init != nullptr) {
    std::copy(a.v_init + n0, a.v_init + n0 + len, v_local);
  } else {
    std::fill(v_local, v_local + len, v_r);
  }
  const scalar_t* x_base = static_cast<const scalar_t*>(a.x);
  scalar_t* spikes_base = static_cast<scalar_t*>(a.spikes);
  for (int64_t t = 0; t < a.T; ++t) {
    const int64_t row = t * a.N + n0;
    const scalar_t* x = x_base + t * a.x_stride_t + n0;
    scalar_t* spikes = spikes_base + row;
    float* h = a.h != nullptr ? a.h + row : h_local;
    // with store_v_seq the state lives in the v output itself: read row t - 1, write row t
    const float* v_prev = store_v_seq && t > 0 ? a.v_out + row - a.N : v_local;
    float* v_next = store_v_seq ? a.v_out + row : v_local;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const float hi = lif_charge(LEAK, DECAY_INPUT, v_prev[i], to_float(x[i]), tau, decay, v_r);
      const bool spike = hi >= v_th;
      h[i] = hi;
      spikes[i] = spike ? one : zero;
      v_next[i] = lif_reset(soft, hi, spike, v_th, v_r);
    }
  }
  if (!store_v_seq) std::copy(v_local, v_local + len, a.v_out + n0);
}

// Returns the chunk's sum of the learnable leak's gradient (0 when a.grad_decay is nullptr).
template <typename scalar_t, int SURROGATE>
double backward_chunk(const LIFParams& p, const LIFBackwardArgs& a, float decay, int64_t n0, int64_t len) {
  alignas(64) float gv_next[kChunk];  // dL/dV[t] from step t + 1
  alignas(64) float gh_local[kChunk];
  alignas(64) float zeros_f[kChunk];
  alignas(64) scalar_t zeros_s[kChunk];
  alignas(64) float v0[kChunk];
  alignas(64) double acc[kChunk];
  const float v_th = p.v_threshold, v_r = p.v_reset, tau = p.tau, alpha = p.alpha;
  const bool soft = p.soft_reset, detach = p.detach_reset, decay_input = p.decay_input;
  const bool leak_div = p.leak == kLeakDiv;
  // IF is a leak of 0 here: gh - gh * 0 == gh exactly, and its grad_x is gh (no decay_input)
  const float k_mul = p.leak == kLeakMul ? decay : 0.0f;
  const bool gx_scaled = p.leak != kLeakIF && decay_input;
  const bool grad_decay = a.grad_decay != nullptr;
  const bool grad_v_seq = a.grad_v != nullptr && p.store_v_seq;
  std::fill(zeros_f, zeros_f + len, 0.0f);
  std::fill(zeros_s, zeros_s + len, static_cast<scalar_t>(0.0f));
  if (a.grad_v != nullptr && !p.store_v_seq) {
    std::copy(a.grad_v + n0, a.grad_v + n0 + len, gv_next);
  } else {
    std::fill(gv_next, gv_next + len, 0.0f);
  }
  if (grad_decay) {
    std::fill(acc, acc + len, 0.0);
    if (a.v_init != nullptr) {
      std::copy(a.v_init + n0, a.v_init + n0 + len, v0);
    } else {
      std::fill(v0, v0 + len, v_r);
    }
  }
  const scalar_t* gs_base = static_cast<const scalar_t*>(a.grad_spikes);
  const scalar_t* x_base = static_cast<const scalar_t*>(a.x);
  scalar_t* gx_base = static_cast<scalar_t*>(a.grad_x);
  for (int64_t t = a.T - 1; t >= 0; --t) {
    const int64_t row = t * a.N + n0;
    const float* h = a.h + row;
    // absent gradients read zeros: gs * sg + gh and gv + 0 round exactly as without them
    const scalar_t* gs = gs_base != nullptr ? gs_base + row : zeros_s;
    const float* gvs = grad_v_seq ? a.grad_v + row : zeros_f;
    scalar_t* gx = gx_base + row;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const float hi = h[i];
      const float sg = surrogate_grad<SURROGATE>(hi - v_th, alpha);
      const float gv = gv_next[i] + gvs[i];
      float gh = gv * lif_dv_dh(soft, detach, v_th, v_r, hi, hi >= v_th, sg);
      gh = to_float(gs[i]) * sg + gh;
      const float gh_k = leak_div ? gh / tau : gh * k_mul;
      gx[i] = static_cast<scalar_t>(gx_scaled ? gh_k : gh);
      gv_next[i] = gh - gh_k;
      gh_local[i] = gh;
    }
    if (!grad_decay) continue;
    // dH[t]/d(decay) = X[t] - (V[t-1] - V_r) (decay_input) or -(V[t-1] - V_r)
    const float* h_prev = t > 0 ? a.h + row - a.N : nullptr;
    const scalar_t* x = decay_input ? x_base + t * a.x_stride_t + n0 : nullptr;
    if (h_prev != nullptr && x != nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const float v_prev = lif_reset(soft, h_prev[i], h_prev[i] >= v_th, v_th, v_r);
        acc[i] += static_cast<double>(gh_local[i] * (to_float(x[i]) - (v_prev - v_r)));
      }
    } else if (h_prev != nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const float v_prev = lif_reset(soft, h_prev[i], h_prev[i] >= v_th, v_th, v_r);
        acc[i] += static_cast<double>(gh_local[i] * -(v_prev - v_r));
      }
    } else if (x != nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) acc[i] += static_cast<double>(gh_local[i] * (to_float(x[i]) - (v0[i] - v_r)));
    } else {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) acc[i] += static_cast<double>(gh_local[i] * -(v0[i] - v_r));
    }
  }
  std::copy(gv_next, gv_next + len, a.grad_v_init + n0);
  double sum = 0.0;
  if (grad_decay) {
    for (int64_t i = 0; i < len; ++i) sum += acc[i];
  }
  return sum;
}

template <typename scalar_t, int LEAK, bool DECAY_INPUT>
void forward_all(const LIFParams& p, const LIFForwardArgs& a) {
  const float decay = LEAK == kLeakMul ? *a.decay : 0.0f;
  const int64_t chunks = (a.N + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, grain_chunks(a.T), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t n0 = c * kChunk;
      forward_chunk<scalar_t, LEAK, DECAY_INPUT>(p, a, decay, n0, std::min(kChunk, a.N - n0));
    }
  });
}

template <typename scalar_t>
void forward_cpu(const LIFParams& p, const LIFForwardArgs& a) {
  if (p.leak == kLeakIF) return forward_all<scalar_t, kLeakIF, false>(p, a);
  if (p.leak == kLeakDiv) {
    return p.decay_input ? forward_all<scalar_t, kLeakDiv, true>(p, a) : forward_all<scalar_t, kLeakDiv, false>(p, a);
  }
  return p.decay_input ? forward_all<scalar_t, kLeakMul, true>(p, a) : forward_all<scalar_t, kLeakMul, false>(p, a);
}

template <typename scalar_t, int SURROGATE>
void backward_all(const LIFParams& p, const LIFBackwardArgs& a) {
  const float decay = p.leak == kLeakMul ? *a.decay : 0.0f;
  const int64_t chunks = (a.N + kChunk - 1) / kChunk;
  // one partial per chunk, summed in chunk order: the result does not depend on the thread count
  std::vector<double> partial(chunks, 0.0);
  at::parallel_for(0, chunks, grain_chunks(a.T), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t n0 = c * kChunk;
      partial[c] = backward_chunk<scalar_t, SURROGATE>(p, a, decay, n0, std::min(kChunk, a.N - n0));
    }
  });
  if (a.grad_decay != nullptr) {
    double sum = 0.0;
    for (double s : partial) sum += s;
    *a.grad_decay = static_cast<float>(sum);
  }
}

template <typename scalar_t>
void backward_cpu(const LIFParams& p, const LIFBackwardArgs& a) {
  switch (p.surrogate) {
    case kSigmoid: return backward_all<scalar_t, kSigmoid>(p, a);
    case kAtan: return backward_all<scalar_t, kAtan>(p, a);
    case kPiecewiseQuadratic: return backward_all<scalar_t, kPiecewiseQuadratic>(p, a);
    case kErf: return backward_all<scalar_t, kErf>(p, a);
    case kPiecewiseExp: return backward_all<scalar_t, kPiecewiseExp>(p, a);
    case kSoftSign: return backward_all<scalar_t, kSoftSign>(p, a);
    default: return backward_all<scalar_t, kSuperSpike>(p, a);
  }
}

TensorTriple lif_forward_cpu(const at::Tensor& x_seq, const std::optional<at::Tensor>& v_init,
                             const std::optional<at::Tensor>& decay, int64_t leak, double tau, bool decay_input,
                             double v_threshold, double v_reset, bool soft_reset, bool detach_reset,
                             int64_t surrogate, double alpha, bool store_v_seq, bool save_h) {
  return lif_forward_impl(c10::DeviceType::CPU, x_seq, v_init, decay, leak, tau, decay_input, v_threshold, v_reset,
                          soft_reset, detach_reset, surrogate, alpha, store_v_seq, save_h,
                          [](DType dtype, const LIFParams& p, const LIFForwardArgs& a) {
                            switch (dtype) {
                              case DType::kFloat16: return forward_cpu<at::Half>(p, a);
                              case DType::kBFloat16: return forward_cpu<at::BFloat16>(p, a);
                              default: return forward_cpu<float>(p, a);
                            }
                          });
}

TensorTriple lif_backward_cpu(const std::optional<at::Tensor>& grad_spikes, const std::optional<at::Tensor>& grad_v,
                              const at::Tensor& h, const std::optional<at::Tensor>& x_seq,
                              const std::optional<at::Tensor>& v_init, const std::optional<at::Tensor>& decay,
                              int64_t leak, double tau, bool decay_input, double v_threshold, double v_reset,
                              bool soft_reset, bool detach_reset, int64_t surrogate, double alpha, bool store_v_seq,
                              at::ScalarType x_dtype, bool need_grad_decay) {
  return lif_backward_impl(c10::DeviceType::CPU, grad_spikes, grad_v, h, x_seq, v_init, decay, leak, tau, decay_input,
                           v_threshold, v_reset, soft_reset, detach_reset, surrogate, alpha, store_v_seq, x_dtype,
                           need_grad_decay, [](DType dtype, const LIFParams& p, const LIFBackwardArgs& a) {
                             switch (dtype) {
                               case DType::kFloat16: return backward_cpu<at::Half>(p, a);
                               case DType::kBFloat16: return backward_cpu<at::BFloat16>(p, a);
                               default: return backward_cpu<float>(p, a);
                             }
                           });
}

}  // namespace

TORCH_LIBRARY_IMPL(tks, CPU, m) {
  m.impl("lif_forward", &lif_forward_cpu);
  m.impl("lif_backward", &lif_backward_cpu);
}

}  // namespace lif
}  // namespace tks
