// Shared by the C++ CPU kernels (csrc/lif surrogates, csrc/tks_loss): a vectorisable fp32 exp.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace tks {

// exp(x) in fp32 with only +, *, compares and bit operations, so that GCC vectorises the
// surrogate loops (glibc's expf is a scalar call). exp(x) = 2^k * e^r with k = round(x / ln 2)
// and |r| <= ln(2) / 2; e^r by a degree-6 polynomial (Cephes' coefficients), about 1 ulp.
// Results below exp(-87) flush to 0 and exp(88..88.72) saturate at exp(88): the surrogates
// only use it where such values are ~1e-38 of the gradient, far below fp32's resolution of it,
// and the TKS loss next to the 1 a shifted softmax sum always holds.
#if defined(__GNUC__) || defined(__clang__)
__attribute__((always_inline))  // also inside target_clones functions, or their loops stay scalar
#endif
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

}  // namespace tks
