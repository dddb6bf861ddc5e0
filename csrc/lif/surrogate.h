// Surrogate gradients g'(x) of the Heaviside spike, exactly as spikingjelly 2.0.0 defines them,
// shared by the CUDA and the C++ CPU kernels. Plain C++ (no torch headers): the .cu files include it.
//
// The ids must equal tks_kernels/lif/surrogate.py SURROGATES (tests/test_lif_ext.py checks it).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

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
  kNumSurrogates = 7,
};

#if !defined(__CUDA_ARCH__)
// exp(x) in fp32 with only +, *, compares and bit operations, so that GCC vectorises the
// surrogate loops (glibc's expf is a scalar call). exp(x) = 2^k * e^r with k = round(x / ln 2)
// and |r| <= ln(2) / 2; e^r by a degree-6 polynomial (Cephes' coefficients), about 1 ulp.
// Results below exp(-87) flush to 0 and exp(88..88.72) saturate at exp(88): the surrogates
// only use it where such values are ~1e-38 of the gradient, far below fp32's resolution of it.
inline float host_expf(float x) {
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693359375f;         // ln 2 = kLn2Hi + kLn2Lo, kLn2Hi exact in 9 bits
  const float kLn2Lo = -2.12194440e-4f;
  const float kRound = 12582912.0f;          // 1.5 * 2^23: adding it rounds to an integer
  float xc = x > 88.0f ? 88.0f : x;
  xc = xc < -87.0f ? -87.0f : xc;
  // k + 1.5 * 2^23 holds the integer k in its low mantissa bits (two's complement), so 2^k is
  // built with integer ops only (a float -> int conversion stops GCC from vectorising here)
  const float k_biased = xc * kLog2e + kRound;  // needs no FP contraction (-ffp-contract=off)
  const float k = k_biased - kRound;
  float r = xc - k * kLn2Hi;
  r = r - k * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e_r = p * (r * r) + r + 1.0f;
  uint32_t bits;
  std::memcpy(&bits, &k_biased, sizeof(bits));
  bits = (bits - 0x4B400000u + 127u) << 23;  // 2^k, k in [-126, 127]; 0x4B400000 = bits of 1.5 * 2^23
  float two_k;
  std::memcpy(&two_k, &bits, sizeof(two_k));
  float y = e_r * two_k;
  y = x < -87.0f ? 0.0f : y;
  y = x > 88.72283935546875f ? INFINITY : y;
  return x != x ? x : y;  // NaN stays NaN
}
#endif

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
  } else {  // kSuperSpike
    const float z = fabsf(x) + 1.0f;
    return alpha / (z * z);
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
    default: return surrogate_grad<kSuperSpike>(x, alpha);
  }
}

}  // namespace lif
}  // namespace tks
