// CUDA kernels of the fused multi-step LIF (no torch headers: they compile in seconds).
//
// One thread owns VEC adjacent neurons and walks time in a loop, so the state stays in registers,
// every input element is read once and every output element written once (16-byte accesses for
// fp32 when the rows are aligned). The options are uniform run-time branches: the kernels are
// memory bound and a template per option would multiply the build time.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "lif/lif_cuda.h"

namespace tks {
namespace lif {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <int VEC, typename T>
__device__ __forceinline__ void load(const T* p, float (&out)[VEC]) {
  const Pack<T, VEC> pk = *reinterpret_cast<const Pack<T, VEC>*>(p);
#pragma unroll
  for (int i = 0; i < VEC; ++i) out[i] = to_float(pk.v[i]);
}

template <int VEC, typename T>
__device__ __forceinline__ void store(T* p, const float (&in)[VEC]) {
  Pack<T, VEC> pk;
#pragma unroll
  for (int i = 0; i < VEC; ++i) pk.v[i] = from_float<T>(in[i]);
  *reinterpret_cast<Pack<T, VEC>*>(p) = pk;
}

// The factor of V in the I-LIF charge: fp32(1 - 1/tau), 1 - decay_tensor, or 1 (IF, unused).
__device__ __forceinline__ float count_decay_of(const LIFParams& p, float decay) {
  return p.leak == kLeakMul ? 1.0f - decay : (p.leak == kLeakDiv ? p.count_decay : 1.0f);
}

// One step of VEC neurons: H from V[t-1] and X[t], the spike (or count) S, and V[t] after the
// reset. COUNT: integer spike counts (I-LIF, lif_kernel.h count_*), else binary spikes. Shared by the
// forward and the backward's recompute (save="x"), so both give the same bits.
template <int VEC, bool COUNT>
__device__ __forceinline__ void lif_step(const LIFParams& p, float decay, float count_decay, float (&v)[VEC],
                                         const float (&x)[VEC], float (&h)[VEC], float (&s)[VEC]) {
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    if (COUNT) {
      h[i] = p.count_lif_charge ? lif_charge(p.leak, false, v[i], x[i], p.tau, decay, 0.0f)
                                : count_charge(p.leak, v[i], x[i], count_decay);
      s[i] = spike_count(h[i] / p.v_threshold, p.count);  // IEEE division (no --use_fast_math)
      v[i] = h[i] - s[i] * p.v_threshold;
    } else {
      h[i] = lif_charge(p.leak, p.decay_input, v[i], x[i], p.tau, decay, p.v_reset);
      const bool spike = h[i] >= p.v_threshold;
      s[i] = spike ? 1.0f : 0.0f;
      v[i] = lif_reset(p.soft_reset, h[i], spike, p.v_threshold, p.v_reset);
    }
  }
}

// V[-1] of a thread's VEC neurons: v_init's, or V_r (0 for soft reset and counts).
template <int VEC>
__device__ __forceinline__ void initial_state(const LIFParams& p, const float* v_init, int64_t n, float (&v)[VEC]) {
  if (v_init != nullptr) {
    load<VEC>(v_init + n, v);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) v[i] = p.v_reset;
  }
}

template <typename T, int VEC, bool COUNT>
__global__ void __launch_bounds__(kThreads) lif_forward_kernel(const LIFParams p, const LIFForwardArgs a) {
  const int64_t n = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * VEC;
  if (n >= a.N) return;  // N % VEC == 0: a thread's neurons are all in range or all out
  const T* x = static_cast<const T*>(a.x) + n;
  T* spikes = static_cast<T*>(a.spikes) + n;
  const float decay = p.leak == kLeakMul ? *a.decay : 0.0f;
  const float count_decay = COUNT ? count_decay_of(p, decay) : 0.0f;
  float v[VEC];
  initial_state<VEC>(p, a.v_init, n, v);
  float x_cur[VEC];
  load<VEC>(x, x_cur);
  for (int64_t t = 0; t < a.T; ++t) {
    float x_next[VEC] = {};
    if (t + 1 < a.T) load<VEC>(x + (t + 1) * a.x_stride_t, x_next);  // in flight during this step
    float h[VEC], s[VEC];
    lif_step<VEC, COUNT>(p, decay, count_decay, v, x_cur, h, s);
#pragma unroll
    for (int i = 0; i < VEC; ++i) x_cur[i] = x_next[i];
    const int64_t row = t * a.N;
    store<VEC>(spikes + row, s);
    if (a.h != nullptr) store<VEC>(a.h + row + n, h);
    if (p.store_v_seq) store<VEC>(a.v_out + row + n, v);
  }
  if (!p.store_v_seq) store<VEC>(a.v_out + n, v);
}

// g'(u) of the run-time surrogate for VEC values, in place: one switch, then a loop per case.
template <int VEC>
__device__ __forceinline__ void surrogate_grads(int surrogate, float (&u)[VEC], float alpha) {
#define TKS_SURROGATE_CASE(S)                                               \
  case S:                                                                   \
    _Pragma("unroll") for (int i = 0; i < VEC; ++i) u[i] = surrogate_grad<S>(u[i], alpha); \
    break;
  switch (surrogate) {
    TKS_SURROGATE_CASE(kSigmoid)
    TKS_SURROGATE_CASE(kAtan)
    TKS_SURROGATE_CASE(kPiecewiseQuadratic)
    TKS_SURROGATE_CASE(kErf)
    TKS_SURROGATE_CASE(kPiecewiseExp)
    TKS_SURROGATE_CASE(kSoftSign)
    TKS_SURROGATE_CASE(kSuperSpike)
    default:
      TKS_SURROGATE_CASE(kRect)
  }
#undef TKS_SURROGATE_CASE
}

// Sum over the block, valid in thread 0; `scratch` holds kThreads / 32 doubles. Fixed order.
__device__ double block_sum(double v, double* scratch) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = 0.0;
  if (warp == 0) {
    v = lane < kThreads / 32 ? scratch[lane] : 0.0;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// RECOMPUTE (save="x", a.h == nullptr): the thread first re-runs the forward from x and v_init
// (lif_step, the same bits), keeping its T steps of H in a dynamic shared-memory tile of
// T * kThreads * VEC floats (at most 32 KiB: T <= 8 with VEC = 4, T <= 32 with VEC = 1), then reads
// H from there instead of from global memory. Each thread reads only its own slots: no barrier.
template <typename T, int VEC, bool COUNT, bool RECOMPUTE>
__global__ void __launch_bounds__(kThreads) lif_backward_kernel(const LIFParams p, const LIFBackwardArgs a) {
  extern __shared__ __align__(16) float recompute_tile[];
  const int64_t n = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * VEC;
  const bool grad_decay = a.grad_decay != nullptr;
  const bool grad_v_seq = a.grad_v != nullptr && p.store_v_seq;
  double acc = 0.0;  // the leak's gradient: T * VEC terms of both signs, summed in fp64
  if (n < a.N) {     // no early return: every thread takes part in the block reduction
    const T* grad_spikes = static_cast<const T*>(a.grad_spikes);
    const T* x = static_cast<const T*>(a.x);
    T* grad_x = static_cast<T*>(a.grad_x);
    const float decay = p.leak == kLeakMul ? *a.decay : 0.0f;
    const float count_decay = COUNT ? count_decay_of(p, decay) : 0.0f;
    // grad of the loss w.r.t. V[t] arriving from step t + 1 (and from the final-v output)
    float gv_next[VEC] = {};
    if (a.grad_v != nullptr && !p.store_v_seq) load<VEC>(a.grad_v + n, gv_next);
    float v0[VEC];  // V[-1], the learnable leak's factor at t = 0
#pragma unroll
    for (int i = 0; i < VEC; ++i) v0[i] = p.v_reset;
    if (grad_decay && a.v_init != nullptr) load<VEC>(a.v_init + n, v0);
    float* tile = recompute_tile + threadIdx.x * VEC;  // step t at tile + t * kThreads * VEC
    if (RECOMPUTE) {
      float v[VEC];
      initial_state<VEC>(p, a.v_init, n, v);
      for (int64_t t = 0; t < a.T; ++t) {
        float xt[VEC], ht[VEC], st[VEC];
        load<VEC>(x + t * a.x_stride_t + n, xt);
        lif_step<VEC, COUNT>(p, decay, count_decay, v, xt, ht, st);
        store<VEC>(tile + t * kThreads * VEC, ht);
      }
    }
    // H of step t: the tile's, or the saved one
    auto load_h = [&](int64_t t, float (&out)[VEC]) {
      if (RECOMPUTE) {
        load<VEC>(tile + t * kThreads * VEC, out);
      } else {
        load<VEC>(a.h + t * a.N + n, out);
      }
    };
    int64_t row = (a.T - 1) * a.N;
    float h[VEC];
    load_h(a.T - 1, h);
    for (int64_t t = a.T - 1; t >= 0; --t, row -= a.N) {
      float h_prev[VEC] = {}, gs[VEC] = {}, gvs[VEC] = {}, xs[VEC] = {};
      if (t > 0) load_h(t - 1, h_prev);  // needed next step and for V[t-1]
      if (grad_spikes != nullptr) load<VEC>(grad_spikes + row + n, gs);
      if (grad_v_seq) load<VEC>(a.grad_v + row + n, gvs);
      if (grad_decay && p.decay_input) load<VEC>(x + t * a.x_stride_t + n, xs);
      // Each phase branches once on the uniform options, outside its unrolled loop (an option
      // switch per element makes ptxas take minutes).
      float sg[VEC], gh[VEC], gx[VEC];
      if (COUNT) {
        // dC/dH inside the window, dV/dH = 1 - V_th * dC/dH (1 with detach_reset), dL/dV[t-1] = gh * decay
        // (or the LIF charge's gh - gh / tau)
        const float th_reset = p.detach_reset ? 0.0f : p.v_threshold;
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          sg[i] = count_grad(h[i] / p.v_threshold, p.grad_min, p.grad_max, p.inv_threshold);
          const float gv = grad_v_seq ? gv_next[i] + gvs[i] : gv_next[i];
          gh[i] = gv * (1.0f - th_reset * sg[i]);
          if (grad_spikes != nullptr) gh[i] = gs[i] * sg[i] + gh[i];
          gx[i] = gh[i];
          if (!p.count_lif_charge) {
            gv_next[i] = gh[i] * count_decay;
          } else {  // the LIF charge V - V / tau + X (V - V * k + X)
            gv_next[i] = p.leak == kLeakIF ? gh[i] : gh[i] - (p.leak == kLeakDiv ? gh[i] / p.tau : gh[i] * decay);
          }
        }
        if (grad_decay) {  // dH/d(decay_tensor) = -V[t-1]
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const float v_prev =
                t > 0 ? h_prev[i] - spike_count(h_prev[i] / p.v_threshold, p.count) * p.v_threshold : v0[i];
            acc += static_cast<double>(gh[i] * -v_prev);
          }
        }
      } else {
#pragma unroll
        for (int i = 0; i < VEC; ++i) sg[i] = h[i] - p.v_threshold;
        surrogate_grads<VEC>(p.surrogate, sg, p.alpha);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const float gv = grad_v_seq ? gv_next[i] + gvs[i] : gv_next[i];
          gh[i] = gv * lif_dv_dh(p.soft_reset, p.detach_reset, p.v_threshold, p.v_reset, h[i], h[i] >= p.v_threshold,
                                 sg[i]);
          if (grad_spikes != nullptr) gh[i] = gs[i] * sg[i] + gh[i];
        }
        if (p.leak == kLeakIF) {
#pragma unroll
          for (int i = 0; i < VEC; ++i) gx[i] = gv_next[i] = gh[i];
        } else {
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const float gh_k = p.leak == kLeakDiv ? gh[i] / p.tau : gh[i] * decay;
            gx[i] = p.decay_input ? gh_k : gh[i];
            gv_next[i] = gh[i] - gh_k;
          }
        }
        if (grad_decay) {
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const float v_prev =
                t > 0 ? lif_reset(p.soft_reset, h_prev[i], h_prev[i] >= p.v_threshold, p.v_threshold, p.v_reset)
                      : v0[i];
            const float factor = p.decay_input ? xs[i] - (v_prev - p.v_reset) : -(v_prev - p.v_reset);
            acc += static_cast<double>(gh[i] * factor);
          }
        }
      }
#pragma unroll
      for (int i = 0; i < VEC; ++i) h[i] = h_prev[i];
      store<VEC>(grad_x + row + n, gx);
    }
    store<VEC>(a.grad_v_init + n, gv_next);
  }
  if (!grad_decay) return;
  // In-launch reduction: each block writes its partial sum; the last block to arrive sums the
  // partials in block order (the same order whatever the arrival order) and writes the result.
  __shared__ double scratch[kThreads / 32];
  __shared__ bool is_last;
  const double block_total = block_sum(acc, scratch);
  double* partials = a.workspace;
  unsigned int* arrived = reinterpret_cast<unsigned int*>(a.workspace + gridDim.x);
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = block_total;
    __threadfence();  // the partial is visible to every block before the count says so
    is_last = atomicAdd(arrived, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  double sum = 0.0;
  for (int64_t b = threadIdx.x; b < gridDim.x; b += kThreads) sum += __ldcg(partials + b);  // L2, not a stale L1
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0) *a.grad_decay = static_cast<float>(sum);
}

bool aligned(const void* p, int64_t bytes) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// 16-byte fp32 accesses (VEC = 4) when every row starts on a 4-element boundary.
template <typename T>
bool use_vec4(const void* const* ptrs, int count, int64_t N, int64_t x_stride_t) {
  if (N % 4 != 0 || x_stride_t % 4 != 0) return false;
  for (int i = 0; i < count; ++i) {
    if (!aligned(ptrs[i], 4 * sizeof(T))) return false;
  }
  return true;
}

int64_t num_blocks(int64_t N, int vec) { return ((N + vec - 1) / vec + kThreads - 1) / kThreads; }

template <typename T>
cudaError_t forward(const LIFParams& p, const LIFForwardArgs& a, cudaStream_t stream) {
  const void* fp32_ptrs[] = {a.v_init, a.v_out, a.h};
  const void* t_ptrs[] = {a.x, a.spikes};
  const bool vec = use_vec4<float>(fp32_ptrs, 3, a.N, a.x_stride_t) && use_vec4<T>(t_ptrs, 2, a.N, a.x_stride_t);
  const int64_t blocks = num_blocks(a.N, vec ? 4 : 1);
  if (blocks > INT_MAX) return cudaErrorInvalidConfiguration;
  const unsigned grid = static_cast<unsigned>(blocks);
  const bool count = p.max_spike_count > 0;
  if (vec) {
    if (count) lif_forward_kernel<T, 4, true><<<grid, kThreads, 0, stream>>>(p, a);
    else lif_forward_kernel<T, 4, false><<<grid, kThreads, 0, stream>>>(p, a);
  } else {
    if (count) lif_forward_kernel<T, 1, true><<<grid, kThreads, 0, stream>>>(p, a);
    else lif_forward_kernel<T, 1, false><<<grid, kThreads, 0, stream>>>(p, a);
  }
  return cudaGetLastError();
}

// The recompute's tile takes T * kThreads * VEC floats of shared memory: VEC = 4 up to this many steps.
constexpr int64_t kRecomputeVec4MaxT = 8;

template <typename T>
bool backward_vec(const LIFBackwardArgs& a) {
  if (a.h == nullptr && a.T > kRecomputeVec4MaxT) return false;
  const void* fp32_ptrs[] = {a.grad_v, a.h, a.v_init, a.grad_v_init};
  const void* t_ptrs[] = {a.grad_spikes, a.x, a.grad_x};
  return use_vec4<float>(fp32_ptrs, 4, a.N, a.x_stride_t) && use_vec4<T>(t_ptrs, 3, a.N, a.x_stride_t);
}

template <typename T, int VEC, bool COUNT>
void launch_backward(const LIFParams& p, const LIFBackwardArgs& a, unsigned grid, cudaStream_t stream) {
  if (a.h != nullptr) {
    lif_backward_kernel<T, VEC, COUNT, false><<<grid, kThreads, 0, stream>>>(p, a);
  } else {
    const size_t tile_bytes = static_cast<size_t>(a.T) * kThreads * VEC * sizeof(float);
    lif_backward_kernel<T, VEC, COUNT, true><<<grid, kThreads, tile_bytes, stream>>>(p, a);
  }
}

template <typename T>
int64_t workspace_size(const LIFBackwardArgs& a) {
  if (a.grad_decay == nullptr || a.N == 0) return 0;
  return num_blocks(a.N, backward_vec<T>(a) ? 4 : 1) + 1;  // + 1: the arrival counter
}

template <typename T>
cudaError_t backward(const LIFParams& p, const LIFBackwardArgs& a, cudaStream_t stream) {
  const bool vec = backward_vec<T>(a);
  const int64_t blocks = num_blocks(a.N, vec ? 4 : 1);
  if (blocks > INT_MAX) return cudaErrorInvalidConfiguration;
  if (a.grad_decay != nullptr) {
    const cudaError_t err = cudaMemsetAsync(a.workspace + blocks, 0, sizeof(double), stream);
    if (err != cudaSuccess) return err;
  }
  if (a.h == nullptr && a.T > kCudaRecomputeMaxT) return cudaErrorInvalidValue;  // the binding refuses first
  const unsigned grid = static_cast<unsigned>(blocks);
  const bool count = p.max_spike_count > 0;
  if (vec) {
    if (count) launch_backward<T, 4, true>(p, a, grid, stream);
    else launch_backward<T, 4, false>(p, a, grid, stream);
  } else {
    if (count) launch_backward<T, 1, true>(p, a, grid, stream);
    else launch_backward<T, 1, false>(p, a, grid, stream);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t lif_forward_cuda(DType dtype, const LIFParams& p, const LIFForwardArgs& a, cudaStream_t stream) {
  if (a.N == 0) return cudaSuccess;
  switch (dtype) {
    case DType::kFloat16: return forward<__half>(p, a, stream);
    case DType::kBFloat16: return forward<__nv_bfloat16>(p, a, stream);
    default: return forward<float>(p, a, stream);
  }
}

int64_t lif_backward_cuda_workspace_size(DType dtype, const LIFBackwardArgs& a) {
  switch (dtype) {
    case DType::kFloat16: return workspace_size<__half>(a);
    case DType::kBFloat16: return workspace_size<__nv_bfloat16>(a);
    default: return workspace_size<float>(a);
  }
}

cudaError_t lif_backward_cuda(DType dtype, const LIFParams& p, const LIFBackwardArgs& a, cudaStream_t stream) {
  if (a.N == 0) return cudaSuccess;
  switch (dtype) {
    case DType::kFloat16: return backward<__half>(p, a, stream);
    case DType::kBFloat16: return backward<__nv_bfloat16>(p, a, stream);
    default: return backward<float>(p, a, stream);
  }
}

}  // namespace lif
}  // namespace tks
