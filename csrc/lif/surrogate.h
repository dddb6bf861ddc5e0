// Surrogate gradients g'(x) of the Heaviside spike, exactly as spikingjelly 2.0.0 defines them,
// shared by the CUDA and the C++ CPU kernels. Plain C++ (no torch headers): the .cu files include it.
//
// The ids must equal tks_kernels/lif/surrogate.py SURROGATES (tests/test_lif_ext.py checks it).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if !defined(__CUDA_ARCH__)
#include "common/host_expf.h"  // host_expf, for the CPU kernels
#endif

#if defined(__CUDACC__)
#define TKS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TKS_HOST_DEVICE inline
#endif

namespace tks {
namespace lif {

enum Surrogate : int {
  kSigmoid = 0,
  kAtan = 1,
  kPiecewiseQuadratic = 2,
  kErf = 3,
  kPiecewiseExp = 4,
  kSoftSign = 5,
  kSuperSpike = 6,
  kRect = 7,
  kNumSurrogates = 8,
};


TKS_HOST_DEVICE float surrogate_expf(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return host_expf(x);
#endif
}

// g'(x) of surrogate S with sharpness alpha; the same operation order as the Triton kernels.
template <int S>
TKS_HOST_DEVICE float surrogate_grad(float x, float alpha) {
  if (S == kSigmoid) {
    const float s = 1.0f / (1.0f + surrogate_expf(-(x * alpha)));
    return (1.0f - s) * s * alpha;
  } else if (S == kAtan) {
    const float a = alpha * 0.5f;
    const float ax = 3.14159265358979323846f * a * x;
    return a / (1.0f + ax * ax);
  } else if (S == kPiecewiseQuadratic) {
    const float x_abs = fabsf(x);
    return x_abs > 1.0f / alpha ? 0.0f : -(alpha * alpha) * x_abs + alpha;
  } else if (S == kErf) {
    const float ax = x * alpha;
    return surrogate_expf(-(ax * ax)) * (alpha * 0.56418958354775628f);  // alpha / sqrt(pi)
  } else if (S == kPiecewiseExp) {
    return alpha * 0.5f * surrogate_expf(-alpha * fabsf(x));
  } else if (S == kSoftSign) {
    const float z = 1.0f / alpha + fabsf(x);
    return 1.0f / (2.0f * alpha * (z * z));
  } else if (S == kSuperSpike) {
    const float z = fabsf(x) + 1.0f;
    return alpha / (z * z);
  } else {  // kRect
    return fabsf(x) < 0.5f / alpha ? alpha : 0.0f;
  }
}

// The same with the surrogate chosen at run time (a uniform branch on the GPU).
TKS_HOST_DEVICE float surrogate_grad(int surrogate, float x, float alpha) {
  switch (surrogate) {
    case kSigmoid: return surrogate_grad<kSigmoid>(x, alpha);
    case kAtan: return surrogate_grad<kAtan>(x, alpha);
    case kPiecewiseQuadratic: return surrogate_grad<kPiecewiseQuadratic>(x, alpha);
    case kErf: return surrogate_grad<kErf>(x, alpha);
    case kPiecewiseExp: return surrogate_grad<kPiecewiseExp>(x, alpha);
    case kSoftSign: return surrogate_grad<kSoftSign>(x, alpha);
    case kSuperSpike: return surrogate_grad<kSuperSpike>(x, alpha);
    default: return surrogate_grad<kRect>(x, alpha);
  }
}

}  // namespace lif
}  // namespace tks
