// Definitions of csrc/common/softmax_rows.h (see there).
#include "common/softmax_rows.h"

#include "common/host_expf.h"

#include <cmath>
#include <limits>

// An AVX2 clone and a baseline one of each hot loop, chosen once by the dynamic loader.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
#define TKS_ROWS_HOT __attribute__((target_clones("avx2", "default")))
#else
#define TKS_ROWS_HOT
#endif

namespace tks {
namespace {

float sum_lanes(const float* acc) {
  float s = 0.0f;
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

}  // namespace

TKS_ROWS_HOT float row_max(const float* x, int64_t C) {
  float acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = -std::numeric_limits<float>::infinity();
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] = x[c + l] > acc[l] ? x[c + l] : acc[l];
  }
  float mx = -std::numeric_limits<float>::infinity();
  for (int l = 0; l < kLanes; ++l) mx = acc[l] > mx ? acc[l] : mx;
  for (; c < C; ++c) mx = x[c] > mx ? x[c] : mx;
  return mx;
}

TKS_ROWS_HOT float exp_sum(const float* x, float shift, int64_t C) {
  float acc[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += host_expf(x[c + l] - shift);
  }
  float s = sum_lanes(acc);
  for (; c < C; ++c) s += host_expf(x[c] - shift);
  return s;
}

std::pair<float, float> max_logsum(const float* x, int64_t C) {
  const float mx = row_max(x, C);
  return {mx, std::log(exp_sum(x, mx, C))};
}

TKS_ROWS_HOT std::pair<float, float> weighted_exp_sums(const float* v, float shift, const float* w, int64_t C) {
  float acc_e[kLanes] = {}, acc_ew[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float e = host_expf(v[c + l] - shift);
      const float wl = w[c + l];  // loaded unconditionally and selected, so the loop vectorises
      acc_e[l] += e;
      acc_ew[l] += e * (e > 0.0f ? wl : 0.0f);
    }
  }
  float s = sum_lanes(acc_e), sw = sum_lanes(acc_ew);
  for (; c < C; ++c) {
    const float e = host_expf(v[c] - shift);
    const float wc = w[c];
    s += e;
    sw += e * (e > 0.0f ? wc : 0.0f);
  }
  return {s, sw};
}

}  // namespace tks
