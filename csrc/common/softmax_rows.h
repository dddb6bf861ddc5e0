// Softmax statistics of fp32 rows on the CPU, shared by the TKS loss (csrc/tks_loss) and the KD
// loss (csrc/kd_loss): the row max, the log-sum-exp and the expectation of a per-class quantity
// under a softmax. Each loops over the (contiguous) class dim with kLanes independent partial sums,
// so GCC vectorises it; exp is host_expf (a vectorisable polynomial). The definitions
// (softmax_rows.cpp) are compiled twice, AVX2 and baseline x86-64, picked at load time through
// target_clones; no FMA either way (-ffp-contract=off), so both clones give the same bits.
//
// -inf entries (masked classes) are exact zeros of every exp. A row whose entries are all -inf
// has no softmax: its log-sum-exp is NaN (as torch.logsumexp would give -inf and log_softmax NaN),
// and the callers document that such a row's loss is NaN.
#pragma once

#include <cstdint>
#include <utility>

namespace tks {

constexpr int kLanes = 16;  // independent partial results per reduction: two AVX2 registers

// max of x[0:C] (NaN ignored, as `x > mx ? x : mx`); -inf for an all -inf row.
float row_max(const float* x, int64_t C);

// sum_c exp(x[c] - shift).
float exp_sum(const float* x, float shift, int64_t C);

// {max, log(sum_c exp(x[c] - max))} of x[0:C]: log_softmax(x)_c = (x_c - max) - logsum.
std::pair<float, float> max_logsum(const float* x, int64_t C);

// {sum_c e_c, sum_c e_c w_c} with e_c = exp(v_c - shift): the expectation of w under softmax(v)
// is their ratio. 0 * w = 0 (the 0 log 0 = 0 convention): a class of zero weight (v_c = -inf, or
// an exp that underflows) adds nothing, even where w_c is +-inf or NaN.
std::pair<float, float> weighted_exp_sums(const float* v, float shift, const float* w, int64_t C);

}  // namespace tks
