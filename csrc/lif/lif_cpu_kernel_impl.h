// The C++ CPU kernels of the fused multi-step LIF (no torch headers), compiled once per instruction
// set: lif_cpu_kernel.cpp includes this for the baseline (namespace generic), lif_cpu_kernel_avx2.cpp
// and lif_cpu_kernel_avx512.cpp for AVX2 and AVX-512; lif_cpu_kernel.cpp picks one at run time.
// Every element goes through the same operations in the same order in each, so their results are
// the same bits.
//
// One pass over [T, N]: the neurons are cut into chunks of kChunk; OpenMP threads take chunks,
// and each chunk walks time with its state in small buffers that stay in L1. The inner loops run
// over a chunk's neurons with no loop-carried dependency, the options fixed outside them and only
// selects inside (with -fno-trapping-math), so GCC vectorises them, fp16/bf16 conversions included.
#ifndef TKS_LIF_CPU_ISA
#error "define TKS_LIF_CPU_ISA (the namespace of this instruction set) before including lif_cpu_kernel_impl.h"
#endif

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lif/lif_cpu.h"

namespace tks {
namespace lif {
namespace TKS_LIF_CPU_ISA {
namespace {

// Neurons per chunk. Each chunk walks T rows of every [T, N] tensor, so a chunk's piece of a row
// is a short run of memory: 16 KiB runs keep the hardware prefetchers streaming (the forward at
// T=8, N=2^20 takes 3.2 ms with 4096, 4.4 ms with 512, on one core of an EPYC). The backward's
// per-chunk buffers (~110 KiB) stay in L2.
constexpr int64_t kChunk = 4096;
constexpr int64_t kMinParallelWork = 65536;  // (neuron, step) elements below which one thread runs

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Element types of x_seq, spikes and grad_x: load to fp32, store from fp32 rounding to nearest
// even (as torch's .to(dtype)), written with integer ops and selects so that loops vectorise.
// kStoreApart: the count kernels convert to this type in a loop of their own (store_row).
struct F32 {
  using elem = float;
  static constexpr bool kStoreApart = false;
  static float load(float v) { return v; }
  static float store(float v) { return v; }
};

struct F16 {
  using elem = uint16_t;
  static constexpr bool kStoreApart = true;
  static float load(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1Fu;
    const uint32_t mantissa = h & 0x3FFu;
    const uint32_t normal = ((exponent + 112u) << 23) | (mantissa << 13);     // rebias 15 -> 127
    const uint32_t inf_nan = 0x7F800000u | (mantissa << 13);
    // subnormal: mantissa * 2^-24, exact in fp32
    const uint32_t subnormal = f32_bits(static_cast<float>(static_cast<int32_t>(mantissa)) * 5.9604644775390625e-8f);
    const uint32_t magnitude = exponent == 0 ? subnormal : (exponent == 31 ? inf_nan : normal);
    return bits_f32(sign | magnitude);
  }
  static uint16_t store(float f) {
    const uint32_t bits = f32_bits(f);
    const uint32_t sign = (bits >> 16) & 0x8000u;
    const uint32_t magnitude = bits & 0x7FFFFFFFu;
    // normal: rebias the exponent (127 -> 15), round the mantissa to 10 bits, ties to even; a
    // carry out of the mantissa moves up the exponent
    const uint32_t rebiased = magnitude - (112u << 23);
    const uint32_t normal = (rebiased + 0xFFFu + ((rebiased >> 13) & 1u)) >> 13;
    // |f| < 2^-14 (subnormal): fp32's ulp at 0.5 is 2^-24, fp16's subnormal step, so 0.5 + |f|
    // rounds |f| to a multiple of it, ties to even
    const uint32_t subnormal = f32_bits(bits_f32(magnitude) + 0.5f) - 0x3F000000u;
    uint32_t h = magnitude < 0x38800000u ? subnormal : normal;
    h = magnitude >= 0x477FF000u ? 0x7C00u : h;  // |f| >= 65520 (and inf): inf
    h = magnitude > 0x7F800000u ? 0x7E00u : h;   // NaN
    return static_cast<uint16_t>(sign | h);
  }
};

struct BF16 {
  using elem = uint16_t;
  static constexpr bool kStoreApart = false;
  static float load(uint16_t b) { return bits_f32(static_cast<uint32_t>(b) << 16); }
  static uint16_t store(float f) {
    const uint32_t bits = f32_bits(f);
    const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;  // ties to even
    return static_cast<uint16_t>((bits & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);
  }
};

// The options enter the inner loops as 0/1 float coefficients, not as selects on a loop-invariant
// bool, which GCC 12 does not vectorise. x * 1, x * 0 and x + 0 are exact for finite x, so the
// values are those of lif_reset / lif_dv_dh (lif_kernel.h) bit for bit.
struct ResetCoefs {
  float soft;        // 1 for soft reset
  float v_th_soft;   // V_th for soft reset, else 0
  float v_r_hard;    // V_r for hard reset, else 0
  explicit ResetCoefs(const LIFParams& p)
      : soft(p.soft_reset ? 1.0f : 0.0f),
        v_th_soft(p.soft_reset ? p.v_threshold : 0.0f),
        v_r_hard(p.soft_reset ? 0.0f : p.v_reset) {}
  // V[t] = spike ? (soft ? H - V_th : V_r) : H
  float reset(float h, bool spike) const { return spike ? h * soft - v_th_soft + v_r_hard : h; }
};

struct BackwardCoefs {
  float hard;        // 1 for hard reset: dV/dH loses its 1 where the neuron fired
  float c0, c1;      // dV/dH's surrogate term (c0 - c1 * H) * sg: soft -V_th, 0; hard V_r, 1; detach 0, 0
  float tau_div;     // gh_k = gh / tau_div for LEAK_DIV (backward_block's DIV), else gh * k_mul
  float div_on;
  float k_mul;       // gh * k_mul: decay for LEAK_MUL, else 0 (IF: gh - gh * 0 == gh)
  float gx_leak;     // grad_x = gh_k * gx_leak + gh * gx_keep: the decayed gh with decay_input and a leak
  float gx_keep;
  BackwardCoefs(const LIFParams& p, float decay) {
    const bool detach = p.detach_reset;
    hard = p.soft_reset ? 0.0f : 1.0f;
    c0 = detach ? 0.0f : (p.soft_reset ? -p.v_threshold : p.v_reset);
    c1 = detach || p.soft_reset ? 0.0f : 1.0f;
    div_on = p.leak == kLeakDiv ? 1.0f : 0.0f;
    tau_div = p.leak == kLeakDiv ? p.tau : 1.0f;
    k_mul = p.leak == kLeakMul ? decay : 0.0f;
    gx_leak = p.leak != kLeakIF && p.decay_input ? 1.0f : 0.0f;
    gx_keep = 1.0f - gx_leak;
  }
};

int64_t num_chunks(int64_t N) { return (N + kChunk - 1) / kChunk; }

bool parallel(int64_t T, int64_t N) { return T * N >= kMinParallelWork && num_chunks(N) > 1; }

// V[-1] of neurons [n0, n0 + len): v_init's, or `fill` (V_r; 0 for counts) without one.
inline void initial_state(const float* v_init, int64_t n0, int64_t len, float fill, float* v) {
  if (v_init != nullptr) {
    std::copy(v_init + n0, v_init + n0 + len, v);
  } else {
    std::fill(v, v + len, fill);
  }
}

template <typename IO, int LEAK, bool DECAY_INPUT>
void forward_chunk(const LIFParams& p, const LIFForwardArgs& a, float decay, int64_t n0, int64_t len) {
  using elem = typename IO::elem;
  alignas(64) float v_local[kChunk];
  alignas(64) float h_local[kChunk];
  const float v_th = p.v_threshold, v_r = p.v_reset, tau = p.tau;
  const bool store_v_seq = p.store_v_seq;
  const ResetCoefs rc(p);
  const elem one = IO::store(1.0f), zero = IO::store(0.0f);
  initial_state(a.v_init, n0, len, v_r, v_local);
  const elem* x_base = static_cast<const elem*>(a.x);
  elem* spikes_base = static_cast<elem*>(a.spikes);
  for (int64_t t = 0; t < a.T; ++t) {
    const int64_t row = t * a.N + n0;
    const elem* x = x_base + t * a.x_stride_t + n0;
    elem* spikes = spikes_base + row;
    float* h = a.h != nullptr ? a.h + row : h_local;
    // with store_v_seq the state lives in the v output itself: read row t - 1, write row t
    const float* v_prev = store_v_seq && t > 0 ? a.v_out + row - a.N : v_local;
    float* v_next = store_v_seq ? a.v_out + row : v_local;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const float hi = lif_charge(LEAK, DECAY_INPUT, v_prev[i], IO::load(x[i]), tau, decay, v_r);
      const bool spike = hi >= v_th;
      h[i] = hi;
      spikes[i] = spike ? one : zero;
      v_next[i] = rc.reset(hi, spike);
    }
  }
  if (!store_v_seq) std::copy(v_local, v_local + len, a.v_out + n0);
}

// out[i] = IO::store(in[i]) in a loop of its own. For fp16 (IO::kStoreApart) the count kernels store
// this way: inside their loops GCC 12's narrowing patterns give up on fp16's rounding and leave the
// whole loop scalar (the fp16 count backward took 5x the bf16 one); alone it vectorises.
template <typename IO>
inline void store_row(const float* in, typename IO::elem* out, int64_t len) {
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) out[i] = IO::store(in[i]);
}

// I-LIF (integer spike counts): the same walk over time as forward_chunk. EXACT_INV: V_th is a power
// of two, so H * (1 / V_th) is H / V_th exactly (one product for a division; V_th = 1 by default).
// `decay` is the factor of V (fp32(1 - 1/tau), 1 - k); LIF_CHARGE: the LIF's V - V / tau + X
// (V - V * k + X) instead, k the decay tensor's value.
template <typename IO, int LEAK, bool EXACT_INV, bool LIF_CHARGE>
void count_forward_chunk(const LIFParams& p, const LIFForwardArgs& a, float decay, float k, int64_t n0,
                         int64_t len) {
  using elem = typename IO::elem;
  alignas(64) float v_local[kChunk];
  alignas(64) float h_local[kChunk];
  alignas(64) float c_local[kChunk];
  const float v_th = p.v_threshold, inv_th = p.inv_threshold, count = p.count, tau = p.tau;
  const bool store_v_seq = p.store_v_seq;
  initial_state(a.v_init, n0, len, 0.0f, v_local);
  const elem* x_base = static_cast<const elem*>(a.x);
  elem* spikes_base = static_cast<elem*>(a.spikes);
  for (int64_t t = 0; t < a.T; ++t) {
    const int64_t row = t * a.N + n0;
    const elem* x = x_base + t * a.x_stride_t + n0;
    elem* spikes = spikes_base + row;
    float* h = a.h != nullptr ? a.h + row : h_local;
    const float* v_prev = store_v_seq && t > 0 ? a.v_out + row - a.N : v_local;
    float* v_next = store_v_seq ? a.v_out + row : v_local;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const float xi = IO::load(x[i]);
      const float hi = LIF_CHARGE ? lif_charge(LEAK, false, v_prev[i], xi, tau, k, 0.0f)
                                  : count_charge(LEAK, v_prev[i], xi, decay);
      const float c = spike_count(EXACT_INV ? hi * inv_th : hi / v_th, count);
      h[i] = hi;
      if (IO::kStoreApart) {
        c_local[i] = c;
      } else {
        spikes[i] = IO::store(c);
      }
      v_next[i] = hi - c * v_th;
    }
    if (IO::kStoreApart) store_row<IO>(c_local, spikes, len);
  }
  if (!store_v_seq) std::copy(v_local, v_local + len, a.v_out + n0);
}

// ---------------------------------------------------------------- the recompute (save="x")
// With a.h == nullptr the backward re-runs the forward's charge/fire/reset recurrence from a.x and
// a.v_init, a block of neurons at a time, into a tile of the block's T rows of H that stays in L2;
// then runs the reverse-time backward on the tile. The forward then writes no H: 20 instead of 24
// bytes per neuron-step in fp32, 10 instead of 16 in bf16.

// Floats of the tile: 128 KiB, beside the chunk's ~110 KiB of buffers in a core's L2.
constexpr int64_t kTileFloats = 32768;

// Neurons per recompute block: the tile's rows are as long as T allows, multiples of 64, at least 64.
inline int64_t recompute_block(int64_t T) {
  const int64_t fit = kTileFloats / std::max<int64_t>(T, 1) / 64 * 64;
  return std::min(kChunk, std::max<int64_t>(64, fit));
}

// The calling thread's tile, grown once and kept (an allocation per chunk would cost page faults).
inline float* tile_buffer(int64_t floats) {
  thread_local std::vector<float> tile;
  if (static_cast<int64_t>(tile.size()) < floats) tile.resize(static_cast<size_t>(floats));
  return tile.data();
}

// H of neurons [n0, n0 + len) at every step, row t at tile + t * len: forward_chunk's operations in
// its order, so the same bits.
template <typename IO, int LEAK, bool DECAY_INPUT>
void recharge_block(const LIFParams& p, const LIFBackwardArgs& a, float decay, int64_t n0, int64_t len,
                    float* tile) {
  using elem = typename IO::elem;
  alignas(64) float v[kChunk];
  const float v_th = p.v_threshold, v_r = p.v_reset, tau = p.tau;
  const ResetCoefs rc(p);
  initial_state(a.v_init, n0, len, v_r, v);
  const elem* x_base = static_cast<const elem*>(a.x);
  for (int64_t t = 0; t < a.T; ++t) {
    const elem* x = x_base + t * a.x_stride_t + n0;
    float* h = tile + t * len;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const float hi = lif_charge(LEAK, DECAY_INPUT, v[i], IO::load(x[i]), tau, decay, v_r);
      h[i] = hi;
      v[i] = rc.reset(hi, hi >= v_th);
    }
  }
}

template <typename IO>
void recharge(const LIFParams& p, const LIFBackwardArgs& a, float decay, int64_t n0, int64_t len, float* tile) {
  if (p.leak == kLeakIF) return recharge_block<IO, kLeakIF, false>(p, a, decay, n0, len, tile);
  if (p.leak == kLeakDiv) {
    return p.decay_input ? recharge_block<IO, kLeakDiv, true>(p, a, decay, n0, len, tile)
                         : recharge_block<IO, kLeakDiv, false>(p, a, decay, n0, len, tile);
  }
  return p.decay_input ? recharge_block<IO, kLeakMul, true>(p, a, decay, n0, len, tile)
                       : recharge_block<IO, kLeakMul, false>(p, a, decay, n0, len, tile);
}

// The I-LIF's H, as count_forward_chunk computes it.
template <typename IO, int LEAK, bool EXACT_INV, bool LIF_CHARGE>
void count_recharge_block(const LIFParams& p, const LIFBackwardArgs& a, float decay, float k, int64_t n0,
                          int64_t len, float* tile) {
  using elem = typename IO::elem;
  alignas(64) float v[kChunk];
  const float v_th = p.v_threshold, inv_th = p.inv_threshold, count = p.count, tau = p.tau;
  initial_state(a.v_init, n0, len, 0.0f, v);
  const elem* x_base = static_cast<const elem*>(a.x);
  for (int64_t t = 0; t < a.T; ++t) {
    const elem* x = x_base + t * a.x_stride_t + n0;
    float* h = tile + t * len;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const float xi = IO::load(x[i]);
      const float hi = LIF_CHARGE ? lif_charge(LEAK, false, v[i], xi, tau, k, 0.0f)
                                  : count_charge(LEAK, v[i], xi, decay);
      const float c = spike_count(EXACT_INV ? hi * inv_th : hi / v_th, count);
      h[i] = hi;
      v[i] = hi - c * v_th;
    }
  }
}

template <typename IO, bool EXACT_INV, bool LIF_CHARGE>
void count_recharge(const LIFParams& p, const LIFBackwardArgs& a, float decay, float k, int64_t n0, int64_t len,
                    float* tile) {
  if (p.leak == kLeakIF) return count_recharge_block<IO, kLeakIF, EXACT_INV, LIF_CHARGE>(p, a, decay, k, n0, len, tile);
  if (p.leak == kLeakDiv) {
    return count_recharge_block<IO, kLeakDiv, EXACT_INV, LIF_CHARGE>(p, a, decay, k, n0, len, tile);
  }
  count_recharge_block<IO, kLeakMul, EXACT_INV, LIF_CHARGE>(p, a, decay, k, n0, len, tile);
}

// the chunk's sum of the per-neuron sums in acc, in neuron order (0 without a.grad_decay)
inline double chunk_sum(const LIFBackwardArgs& a, const double* acc, int64_t len) {
  double sum = 0.0;
  if (a.grad_decay != nullptr) {
    for (int64_t i = 0; i < len; ++i) sum += acc[i];
  }
  return sum;
}

// The backward of neurons [n0, n0 + len): H of step t at h_rows + t * h_stride (the saved H, or
// the recompute's tile); with a.grad_decay, each neuron's fp64 sum of the leak's gradient in acc.
template <typename IO, int SURROGATE, bool DIV>
void backward_block(const LIFParams& p, const LIFBackwardArgs& a, float decay, int64_t n0, int64_t len,
                    const float* h_rows, int64_t h_stride, double* acc) {
  using elem = typename IO::elem;
  alignas(64) float gv_next[kChunk];  // dL/dV[t] arriving from step t + 1
  alignas(64) float gh_local[kChunk];
  alignas(64) float zeros_f[kChunk];
  alignas(64) elem zeros_e[kChunk];
  alignas(64) float v0[kChunk];
  const float v_th = p.v_threshold, v_r = p.v_reset, alpha = p.alpha;
  const bool decay_input = p.decay_input;
  const ResetCoefs rc(p);
  const BackwardCoefs bc(p, decay);
  const bool grad_decay = a.grad_decay != nullptr;
  const bool grad_v_seq = a.grad_v != nullptr && p.store_v_seq;
  // the plain loop: spike gradients present, no per-step v gradient, no learnable leak
  const bool plain = a.grad_spikes != nullptr && !grad_v_seq && !grad_decay;
  if (!plain) {
    std::fill(zeros_f, zeros_f + len, 0.0f);
    std::fill(zeros_e, zeros_e + len, IO::store(0.0f));
  }
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
  const elem* gs_base = static_cast<const elem*>(a.grad_spikes);
  const elem* x_base = static_cast<const elem*>(a.x);
  elem* gx_base = static_cast<elem*>(a.grad_x);
  for (int64_t t = a.T - 1; t >= 0; --t) {
    const int64_t row = t * a.N + n0;
    const float* h = h_rows + t * h_stride;
    // absent gradients read zeros: gs * sg + gh and gv + 0 round exactly as without the terms
    const elem* gs = gs_base != nullptr ? gs_base + row : zeros_e;
    const float* gvs = grad_v_seq ? a.grad_v + row : zeros_f;
    elem* gx = gx_base + row;
    if (plain) {
      // the default: gradients on the spikes (and the final v) only, no learnable leak; the same
      // expressions without the zero terms' loads and the gh buffer (which spill the chunk's
      // working set out of L1)
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const float hi = h[i];
        const float sg = surrogate_grad<SURROGATE>(hi - v_th, alpha);
        const float gv = gv_next[i] + 0.0f;
        const float fired = hi >= v_th ? 1.0f : 0.0f;
        const float dv_dh = (1.0f - bc.hard * fired) + (bc.c0 - bc.c1 * hi) * sg;
        float gh = gv * dv_dh;
        gh = IO::load(gs[i]) * sg + gh;
        const float gh_k = DIV ? gh / bc.tau_div : gh * bc.k_mul;  // = gh / tau * 1 + gh * 0, and the rest
        gx[i] = IO::store(gh_k * bc.gx_leak + gh * bc.gx_keep);
        gv_next[i] = gh - gh_k;
      }
      continue;
    }
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const float hi = h[i];
      const float sg = surrogate_grad<SURROGATE>(hi - v_th, alpha);
      const float gv = gv_next[i] + gvs[i];
      const float fired = hi >= v_th ? 1.0f : 0.0f;
      const float dv_dh = (1.0f - bc.hard * fired) + (bc.c0 - bc.c1 * hi) * sg;  // = lif_dv_dh
      float gh = gv * dv_dh;
      gh = IO::load(gs[i]) * sg + gh;
      const float gh_k = DIV ? gh / bc.tau_div : gh * bc.k_mul;
      gx[i] = IO::store(gh_k * bc.gx_leak + gh * bc.gx_keep);
      gv_next[i] = gh - gh_k;
      gh_local[i] = gh;
    }
    if (!grad_decay) continue;
    // dH[t]/d(decay) = X[t] - (V[t-1] - V_r) with decay_input, else -(V[t-1] - V_r)
    const float* h_prev = t > 0 ? h - h_stride : nullptr;
    const elem* x = decay_input ? x_base + t * a.x_stride_t + n0 : nullptr;
    if (h_prev != nullptr && x != nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const float v_prev = rc.reset(h_prev[i], h_prev[i] >= v_th);
        acc[i] += static_cast<double>(gh_local[i] * (IO::load(x[i]) - (v_prev - v_r)));
      }
    } else if (h_prev != nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const float v_prev = rc.reset(h_prev[i], h_prev[i] >= v_th);
        acc[i] += static_cast<double>(gh_local[i] * -(v_prev - v_r));
      }
    } else if (x != nullptr) {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) acc[i] += static_cast<double>(gh_local[i] * (IO::load(x[i]) - (v0[i] - v_r)));
    } else {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) acc[i] += static_cast<double>(gh_local[i] * -(v0[i] - v_r));
    }
  }
  std::copy(gv_next, gv_next + len, a.grad_v_init + n0);
}

// I-LIF backward: gh = gs * dC/dH + gv * dV/dH (dV/dH = 1 - V_th * dC/dH, or 1 with detach_reset),
// grad_x = gh, dL/dV[t-1] = gh * decay (LIF_CHARGE: gh - gh / tau, gh - gh * k, the LIF's, as
// autograd through its charge); the learnable leak's factor dH/dk = -V[t-1] either way.
// PLAIN: spike gradients present, no per-step v gradient, no learnable leak (the common case:
// no zero buffers to read, no gh buffer).
template <typename IO, bool EXACT_INV, bool PLAIN, bool LIF_CHARGE>
void count_backward_block(const LIFParams& p, const LIFBackwardArgs& a, float decay, float k, int64_t n0,
                          int64_t len, const float* h_rows, int64_t h_stride, double* acc) {
  using elem = typename IO::elem;
  alignas(64) float gv_next[kChunk];
  alignas(64) float gh_local[kChunk];
  alignas(64) float zeros_f[kChunk];
  alignas(64) elem zeros_e[kChunk];
  alignas(64) float v0[kChunk];
  const float v_th = p.v_threshold, inv_th = p.inv_threshold, count = p.count;
  const float lo = p.grad_min, hi_w = p.grad_max;
  const float th_reset = p.detach_reset ? 0.0f : v_th;  // 1 - 0 * g == 1 exactly
  // the LIF charge's gh_k = gh / tau (float tau) or gh * k (tensor), as coefficients (0 for IF):
  // x / 1 * 0 + x * 0 and x / tau * 1 + x * 0 are exact, so gh - gh_k rounds as the reference
  const float div_on = p.leak == kLeakDiv ? 1.0f : 0.0f, tau_div = p.leak == kLeakDiv ? p.tau : 1.0f;
  const float k_mul = p.leak == kLeakMul ? k : 0.0f;
  const bool grad_decay = a.grad_decay != nullptr;
  const bool grad_v_seq = a.grad_v != nullptr && p.store_v_seq;
  if (!PLAIN) {
    std::fill(zeros_f, zeros_f + len, 0.0f);
    std::fill(zeros_e, zeros_e + len, IO::store(0.0f));
  }
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
      std::fill(v0, v0 + len, 0.0f);
    }
  }
  const elem* gs_base = static_cast<const elem*>(a.grad_spikes);
  elem* gx_base = static_cast<elem*>(a.grad_x);
  for (int64_t t = a.T - 1; t >= 0; --t) {
    const int64_t row = t * a.N + n0;
    const float* h = h_rows + t * h_stride;
    elem* gx = gx_base + row;
    if (PLAIN) {
      const elem* gs = gs_base + row;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const float hi = h[i];
        const float g = count_grad(EXACT_INV ? hi * inv_th : hi / v_th, lo, hi_w, inv_th);
        float gh = gv_next[i] * (1.0f - th_reset * g);
        gh = IO::load(gs[i]) * g + gh;
        if (IO::kStoreApart) {
          gh_local[i] = gh;
        } else {
          gx[i] = IO::store(gh);
        }
        gv_next[i] = LIF_CHARGE ? gh - (gh / tau_div * div_on + gh * k_mul) : gh * decay;
      }
      if (IO::kStoreApart) store_row<IO>(gh_local, gx, len);
      continue;
    }
    // absent gradients read zeros: gs * g + gh and gv + 0 round exactly as without the terms
    const elem* gs = gs_base != nullptr ? gs_base + row : zeros_e;
    const float* gvs = grad_v_seq ? a.grad_v + row : zeros_f;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) {
      const float hi = h[i];
      const float g = count_grad(EXACT_INV ? hi * inv_th : hi / v_th, lo, hi_w, inv_th);
      const float gv = gv_next[i] + gvs[i];
      float gh = gv * (1.0f - th_reset * g);
      gh = IO::load(gs[i]) * g + gh;
      if (!IO::kStoreApart) gx[i] = IO::store(gh);
      gv_next[i] = LIF_CHARGE ? gh - (gh / tau_div * div_on + gh * k_mul) : gh * decay;
      gh_local[i] = gh;
    }
    if (IO::kStoreApart) store_row<IO>(gh_local, gx, len);
    if (!grad_decay) continue;
    if (t > 0) {
      const float* h_prev = h - h_stride;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) {
        const float hp = h_prev[i];
        const float v_prev = hp - spike_count(EXACT_INV ? hp * inv_th : hp / v_th, count) * v_th;
        acc[i] += static_cast<double>(gh_local[i] * -v_prev);
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) acc[i] += static_cast<double>(gh_local[i] * -v0[i]);
    }
  }
  std::copy(gv_next, gv_next + len, a.grad_v_init + n0);
}

// One chunk's backward, from the saved H or recomputed block by block (a.h == nullptr); returns the
// chunk's sum of the learnable leak's gradient. The per-neuron sums and their order are the same
// either way, so the gradients are the same bits.
template <typename IO, int SURROGATE, bool DIV>
double backward_chunk(const LIFParams& p, const LIFBackwardArgs& a, float decay, int64_t n0, int64_t len) {
  alignas(64) double acc[kChunk];
  if (a.h != nullptr) {
    backward_block<IO, SURROGATE, DIV>(p, a, decay, n0, len, a.h + n0, a.N, acc);
    return chunk_sum(a, acc, len);
  }
  const int64_t block = recompute_block(a.T);
  float* tile = tile_buffer(a.T * block);
  for (int64_t b = 0; b < len; b += block) {
    const int64_t n = std::min(block, len - b);
    recharge<IO>(p, a, decay, n0 + b, n, tile);
    backward_block<IO, SURROGATE, DIV>(p, a, decay, n0 + b, n, tile, n, acc + b);
  }
  return chunk_sum(a, acc, len);
}

template <typename IO, bool EXACT_INV, bool PLAIN, bool LIF_CHARGE>
double count_backward_chunk(const LIFParams& p, const LIFBackwardArgs& a, float decay, float k, int64_t n0,
                            int64_t len) {
  alignas(64) double acc[kChunk];
  if (a.h != nullptr) {
    count_backward_block<IO, EXACT_INV, PLAIN, LIF_CHARGE>(p, a, decay, k, n0, len, a.h + n0, a.N, acc);
    return chunk_sum(a, acc, len);
  }
  const int64_t block = recompute_block(a.T);
  float* tile = tile_buffer(a.T * block);
  for (int64_t b = 0; b < len; b += block) {
    const int64_t n = std::min(block, len - b);
    count_recharge<IO, EXACT_INV, LIF_CHARGE>(p, a, decay, k, n0 + b, n, tile);
    count_backward_block<IO, EXACT_INV, PLAIN, LIF_CHARGE>(p, a, decay, k, n0 + b, n, tile, n, acc + b);
  }
  return chunk_sum(a, acc, len);
}

// Whether 1 / V_th is exact (V_th a power of two, its reciprocal a normal float): H * (1 / V_th)
// then rounds exactly as H / V_th.
inline bool exact_reciprocal(float v_th) {
  int exponent = 0;
  return std::frexp(v_th, &exponent) == 0.5f && exponent > -125 && exponent < 127;
}

// the factor of V in the I-LIF charge: fp32(1 - 1/tau), 1 - k (as the reference's 1 - decay in
// fp32), 1 for IF; and k itself, the decay tensor's value (0 without one)
inline float count_decay_of(const LIFParams& p, const float* decay_tensor) {
  return p.leak == kLeakMul ? 1.0f - *decay_tensor : (p.leak == kLeakDiv ? p.count_decay : 1.0f);
}

inline float decay_value(const LIFParams& p, const float* decay_tensor) {
  return p.leak == kLeakMul ? *decay_tensor : 0.0f;
}

template <typename IO, int LEAK, bool EXACT_INV, bool LIF_CHARGE>
void count_forward_all(const LIFParams& p, const LIFForwardArgs& a) {
  const float decay = count_decay_of(p, a.decay), k = decay_value(p, a.decay);
  const int64_t chunks = num_chunks(a.N);
#pragma omp parallel for schedule(static) if (parallel(a.T, a.N))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t n0 = c * kChunk;
    count_forward_chunk<IO, LEAK, EXACT_INV, LIF_CHARGE>(p, a, decay, k, n0, std::min(kChunk, a.N - n0));
  }
}

template <typename IO, int LEAK>
void count_forward_leak(const LIFParams& p, const LIFForwardArgs& a) {
  const bool exact = exact_reciprocal(p.v_threshold);
  if (p.count_lif_charge && LEAK != kLeakIF) {
    return exact ? count_forward_all<IO, LEAK, true, true>(p, a) : count_forward_all<IO, LEAK, false, true>(p, a);
  }
  return exact ? count_forward_all<IO, LEAK, true, false>(p, a) : count_forward_all<IO, LEAK, false, false>(p, a);
}

template <typename IO, bool EXACT_INV, bool PLAIN, bool LIF_CHARGE>
void count_backward_all(const LIFParams& p, const LIFBackwardArgs& a) {
  const float decay = count_decay_of(p, a.decay), k = decay_value(p, a.decay);
  const int64_t chunks = num_chunks(a.N);
  std::vector<double> partial(chunks, 0.0);
#pragma omp parallel for schedule(static) if (parallel(a.T, a.N))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t n0 = c * kChunk;
    partial[c] =
        count_backward_chunk<IO, EXACT_INV, PLAIN, LIF_CHARGE>(p, a, decay, k, n0, std::min(kChunk, a.N - n0));
  }
  if (a.grad_decay != nullptr) {
    double sum = 0.0;
    for (double s : partial) sum += s;  // chunk order: independent of the thread count
    // d/d(decay_tensor) of (1 - decay_tensor) * V: the sum of gh * -V[t-1]
    *a.grad_decay = static_cast<float>(sum);
  }
}

template <typename IO, bool LIF_CHARGE>
void count_backward_charge(const LIFParams& p, const LIFBackwardArgs& a) {
  const bool plain = a.grad_spikes != nullptr && !(a.grad_v != nullptr && p.store_v_seq) && a.grad_decay == nullptr;
  const bool exact = exact_reciprocal(p.v_threshold);
  if (plain) {
    return exact ? count_backward_all<IO, true, true, LIF_CHARGE>(p, a)
                 : count_backward_all<IO, false, true, LIF_CHARGE>(p, a);
  }
  return exact ? count_backward_all<IO, true, false, LIF_CHARGE>(p, a)
               : count_backward_all<IO, false, false, LIF_CHARGE>(p, a);
}

template <typename IO>
void count_backward_io(const LIFParams& p, const LIFBackwardArgs& a) {
  if (p.count_lif_charge && p.leak != kLeakIF) return count_backward_charge<IO, true>(p, a);
  count_backward_charge<IO, false>(p, a);
}

template <typename IO, int LEAK, bool DECAY_INPUT>
void forward_all(const LIFParams& p, const LIFForwardArgs& a) {
  const float decay = LEAK == kLeakMul ? *a.decay : 0.0f;
  const int64_t chunks = num_chunks(a.N);
#pragma omp parallel for schedule(static) if (parallel(a.T, a.N))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t n0 = c * kChunk;
    forward_chunk<IO, LEAK, DECAY_INPUT>(p, a, decay, n0, std::min(kChunk, a.N - n0));
  }
}

template <typename IO>
void forward_io(const LIFParams& p, const LIFForwardArgs& a) {
  if (p.max_spike_count > 0) {
    if (p.leak == kLeakIF) return count_forward_leak<IO, kLeakIF>(p, a);
    if (p.leak == kLeakDiv) return count_forward_leak<IO, kLeakDiv>(p, a);
    return count_forward_leak<IO, kLeakMul>(p, a);
  }
  if (p.leak == kLeakIF) return forward_all<IO, kLeakIF, false>(p, a);
  if (p.leak == kLeakDiv) {
    return p.decay_input ? forward_all<IO, kLeakDiv, true>(p, a) : forward_all<IO, kLeakDiv, false>(p, a);
  }
  return p.decay_input ? forward_all<IO, kLeakMul, true>(p, a) : forward_all<IO, kLeakMul, false>(p, a);
}

template <typename IO, int SURROGATE, bool DIV>
void backward_all(const LIFParams& p, const LIFBackwardArgs& a) {
  const float decay = p.leak == kLeakMul ? *a.decay : 0.0f;
  const int64_t chunks = num_chunks(a.N);
  std::vector<double> partial(chunks, 0.0);
#pragma omp parallel for schedule(static) if (parallel(a.T, a.N))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t n0 = c * kChunk;
    partial[c] = backward_chunk<IO, SURROGATE, DIV>(p, a, decay, n0, std::min(kChunk, a.N - n0));
  }
  if (a.grad_decay != nullptr) {
    double sum = 0.0;
    for (double s : partial) sum += s;  // chunk order: independent of the thread count
    *a.grad_decay = static_cast<float>(sum);
  }
}

template <typename IO, int SURROGATE>
void backward_leak(const LIFParams& p, const LIFBackwardArgs& a) {
  if (p.leak == kLeakDiv) return backward_all<IO, SURROGATE, true>(p, a);
  backward_all<IO, SURROGATE, false>(p, a);
}

template <typename IO>
void backward_io(const LIFParams& p, const LIFBackwardArgs& a) {
  if (p.max_spike_count > 0) return count_backward_io<IO>(p, a);
  switch (p.surrogate) {
    case kSigmoid: return backward_leak<IO, kSigmoid>(p, a);
    case kAtan: return backward_leak<IO, kAtan>(p, a);
    case kPiecewiseQuadratic: return backward_leak<IO, kPiecewiseQuadratic>(p, a);
    case kErf: return backward_leak<IO, kErf>(p, a);
    case kPiecewiseExp: return backward_leak<IO, kPiecewiseExp>(p, a);
    case kSoftSign: return backward_leak<IO, kSoftSign>(p, a);
    case kSuperSpike: return backward_leak<IO, kSuperSpike>(p, a);
    default: return backward_leak<IO, kRect>(p, a);
  }
}

// A float tau that is a power of two (2, the default, 4, 0.5 ...) divides exactly as its
// reciprocal multiplies (both are the correctly rounded value of the same real number), so such a
// leak runs as the multiplicative one, with decay = 1/tau: no division per element, the same bits.
inline bool tau_as_decay(const LIFParams& p) {
  return p.leak == kLeakDiv && p.max_spike_count == 0 && exact_reciprocal(p.tau);
}

}  // namespace

void forward(DType dtype, const LIFParams& params, const LIFForwardArgs& args) {
  LIFParams p = params;
  LIFForwardArgs a = args;
  float inv_tau = 0.0f;
  if (tau_as_decay(p)) {
    inv_tau = 1.0f / p.tau;
    p.leak = kLeakMul;
    a.decay = &inv_tau;
  }
  switch (dtype) {
    case DType::kFloat16: return forward_io<F16>(p, a);
    case DType::kBFloat16: return forward_io<BF16>(p, a);
    default: return forward_io<F32>(p, a);
  }
}

void backward(DType dtype, const LIFParams& params, const LIFBackwardArgs& args) {
  LIFParams p = params;
  LIFBackwardArgs a = args;
  float inv_tau = 0.0f;
  if (tau_as_decay(p)) {  // a float tau has no gradient: grad_decay stays nullptr
    inv_tau = 1.0f / p.tau;
    p.leak = kLeakMul;
    a.decay = &inv_tau;
  }
  switch (dtype) {
    case DType::kFloat16: return backward_io<F16>(p, a);
    case DType::kBFloat16: return backward_io<BF16>(p, a);
    default: return backward_io<F32>(p, a);
  }
}

}  // namespace TKS_LIF_CPU_ISA
}  // namespace lif
}  // namespace tks
