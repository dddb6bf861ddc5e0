// Distillation (KD) loss on the CPU: forward and backward, one sample per task (ATen's OpenMP pool).
//
// Same math, outputs and saved statistics as the Triton kernels (tks_kernels/kd_loss/triton.py):
// per sample b, with s_t = student[t, b] (Ts steps) and u_t = teacher[t, b] (Tt steps),
//   a = mean_t u_t / tau (teacher), v = mean_t s_t / tau (student; both as sum_t * 1 / (T tau)),
//   log q = log_softmax(a), log p = log_softmax(v),
//   kl = sum_c q_c (log q_c - log p_c)   (0 log 0 = 0: a class with q_c = 0 adds nothing),
//   loss = tau^2 kl.
// Backward, g = upstream gradient of loss_b:
//   d student[t, b, c] = g tau (p_c - q_c) / Ts                   (the same for every step t)
//   d teacher[t, b, c] = g tau q_c ((log q_c - log p_c) - kl) / Tt  (0 where q_c = 0)
// The forward saves, per sample, a and v ([C] each, fp32) and their softmax statistics, so the
// backward reads 2C floats per sample instead of the (Ts + Tt) C logits, and never the logits.
//
// The row statistics (max, log-sum-exp, the expectation under softmax(a)) are
// csrc/common/softmax_rows.h, shared with the TKS loss; fp32 arithmetic, no FMA contraction.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/host_expf.h"
#include "common/softmax_rows.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
#define KD_LOSS_HOT __attribute__((target_clones("avx2", "default")))
#else
#define KD_LOSS_HOT
#endif

namespace tks {
namespace {

// Saved per sample: a [C], v [C], then kKdStats floats: a_max, a_logsum, v_max, v_logsum, kl, 3 unused.
constexpr int64_t kKdStats = 8;
// Samples whose rows are read (forward) or written (backward) together, step by step: the rows of
// one step for consecutive samples are one contiguous stretch of a [T, B, C] tensor, which the
// hardware prefetcher streams (a sample's own T rows are B * C apart). 16 rows of C = 1000 fp32
// are 64 KB of buffer.
constexpr int64_t kSampleBlock = 16;

KD_LOSS_HOT void add_row(float* acc, const float* row, int64_t C) {
  for (int64_t c = 0; c < C; ++c) acc[c] += row[c];
}

KD_LOSS_HOT void scale_row(float* x, float k, int64_t C) {
  for (int64_t c = 0; c < C; ++c) x[c] *= k;
}

// row as fp32: float rows in place, others converted into buf.
template <typename scalar_t>
const float* as_float(const scalar_t* row, int64_t C, float* buf) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return row;
  } else {
    for (int64_t c = 0; c < C; ++c) buf[c] = static_cast<float>(row[c]);
    return buf;
  }
}

// Rows b0..b1 of out (row b at out + (b - b0) * out_ld): the mean over the T steps of x[t, b, :]
// divided by tau (the sum in step order, times 1 / (T tau): within an ulp or two of the
// reference's mean(0) / tau, and no division per element).
template <typename scalar_t>
void scaled_means(const scalar_t* x, int64_t T, int64_t stride_t, int64_t stride_b, int64_t b0, int64_t b1,
                  int64_t C, float tau, float* out, int64_t out_ld, float* buf) {
  for (int64_t b = b0; b < b1; ++b) {
    const float* row = as_float(x + b * stride_b, C, buf);
    std::copy(row, row + C, out + (b - b0) * out_ld);
  }
  for (int64_t t = 1; t < T; ++t) {
    for (int64_t b = b0; b < b1; ++b) {
      add_row(out + (b - b0) * out_ld, as_float(x + t * stride_t + b * stride_b, C, buf), C);
    }
  }
  const float k = static_cast<float>(1.0 / (static_cast<double>(T) * static_cast<double>(tau)));
  for (int64_t b = b0; b < b1; ++b) scale_row(out + (b - b0) * out_ld, k, C);
}

using MeanFn = void (*)(const void*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float*, int64_t,
                        float*);

template <typename scalar_t>
void scaled_means_erased(const void* x, int64_t T, int64_t stride_t, int64_t stride_b, int64_t b0, int64_t b1,
                         int64_t C, float tau, float* out, int64_t out_ld, float* buf) {
  scaled_means(static_cast<const scalar_t*>(x), T, stride_t, stride_b, b0, b1, C, tau, out, out_ld, buf);
}

MeanFn mean_fn(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return &scaled_means_erased<float>;
    case at::kHalf: return &scaled_means_erased<at::Half>;
    case at::kBFloat16: return &scaled_means_erased<at::BFloat16>;
    default: TORCH_CHECK(false, "kd_loss (cpp): logits must be float32, float16 or bfloat16, got ", dtype);
  }
  return nullptr;
}

// d_c = log q_c - log p_c, 0 where q_c = 0 (a = -inf: log q = -inf and log p may be too).
KD_LOSS_HOT void log_ratio(const float* a, const float* v, const float* st, int64_t C, float* d) {
  const float a_max = st[0], a_logsum = st[1], v_max = st[2], v_logsum = st[3];
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < C; ++c) {
    const float log_q = (a[c] - a_max) - a_logsum;
    const float log_p = (v[c] - v_max) - v_logsum;
    d[c] = a[c] == kNegInf ? 0.0f : log_q - log_p;
  }
}

void check_pair(const at::Tensor& student, const at::Tensor& teacher, double temperature) {
  for (const at::Tensor* x : {&student, &teacher}) {
    TORCH_CHECK(x->device().is_cpu(), "kd_loss (cpp): student and teacher must be CPU tensors, got ", x->device());
    TORCH_CHECK(x->dim() == 3, "kd_loss (cpp): student and teacher must be [T, B, C], got ", x->sizes());
    TORCH_CHECK(x->size(0) >= 1 && x->size(1) >= 1 && x->size(2) >= 1,
                "kd_loss (cpp): student and teacher must have T, B, C >= 1, got ", x->sizes());
  }
  TORCH_CHECK(student.size(1) == teacher.size(1) && student.size(2) == teacher.size(2),
              "kd_loss (cpp): student ", student.sizes(), " and teacher ", teacher.sizes(),
              " must have the same B and C");
  TORCH_CHECK(temperature > 0.0, "kd_loss (cpp): temperature must be > 0, got ", temperature);
}

std::tuple<at::Tensor, at::Tensor> kd_loss_forward_cpu(const at::Tensor& student, const at::Tensor& teacher,
                                                       double temperature) {
  check_pair(student, teacher, temperature);
  const MeanFn student_means = mean_fn(student.scalar_type()), teacher_means = mean_fn(teacher.scalar_type());
  // class dim contiguous; any strides for T and B
  const at::Tensor s = student.stride(2) == 1 ? student : student.contiguous();
  const at::Tensor u = teacher.stride(2) == 1 ? teacher : teacher.contiguous();
  const int64_t Ts = s.size(0), Tt = u.size(0), B = s.size(1), C = s.size(2);
  const int64_t row = 2 * C + kKdStats;
  auto f32 = s.options().dtype(at::kFloat);
  at::Tensor loss = at::empty({B}, f32), saved = at::empty({B, row}, f32);
  const void* s_ptr = s.const_data_ptr();
  const void* u_ptr = u.const_data_ptr();
  const int64_t s_st = s.stride(0), s_sb = s.stride(1), u_st = u.stride(0), u_sb = u.stride(1);
  float* loss_ptr = loss.data_ptr<float>();
  float* saved_ptr = saved.data_ptr<float>();
  const float tau = static_cast<float>(temperature);
  const double tau_sq = temperature * temperature;

  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> d(C);  // also the conversion buffer of fp16 / bf16 rows
    for (int64_t b0 = begin; b0 < end; b0 += kSampleBlock) {
      const int64_t b1 = std::min(b0 + kSampleBlock, end);
      // a (teacher) and v (student) of the block's samples, straight into the saved buffer
      teacher_means(u_ptr, Tt, u_st, u_sb, b0, b1, C, tau, saved_ptr + b0 * row, row, d.data());
      student_means(s_ptr, Ts, s_st, s_sb, b0, b1, C, tau, saved_ptr + b0 * row + C, row, d.data());
      for (int64_t b = b0; b < b1; ++b) {
        float* a = saved_ptr + b * row;
        float* v = a + C;
        float* st = v + C;
        std::tie(st[0], st[1]) = max_logsum(a, C);
        std::tie(st[2], st[3]) = max_logsum(v, C);
        log_ratio(a, v, st, C, d.data());
        // kl = E_q[d] = sum_c e_c d_c / sum_c e_c, e_c = exp(a_c - a_max)
        const auto [q_sum, q_dot_d] = weighted_exp_sums(a, st[0], d.data(), C);
        const float kl = static_cast<float>(static_cast<double>(q_dot_d) / static_cast<double>(q_sum));
        st[4] = kl;
        st[5] = st[6] = st[7] = 0.0f;
        loss_ptr[b] = static_cast<float>(tau_sq * kl);
      }
    }
  });
  return {loss, saved};
}

// Gradient rows of samples b0..b1 (row b at rows + (b - b0) * C) written to every step of the
// contiguous [T, B, C] out, in its dtype, step by step (one contiguous stretch per step).
template <typename scalar_t>
void broadcast_rows(const float* rows, int64_t T, int64_t B, int64_t b0, int64_t b1, int64_t C, scalar_t* out) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = b0; b < b1; ++b) {
      const float* src = rows + (b - b0) * C;
      scalar_t* dst = out + (t * B + b) * C;
      for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<scalar_t>(src[c]);
    }
  }
}

using RowsFn = void (*)(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, void*);

template <typename scalar_t>
void broadcast_rows_erased(const float* rows, int64_t T, int64_t B, int64_t b0, int64_t b1, int64_t C, void* out) {
  broadcast_rows(rows, T, B, b0, b1, C, static_cast<scalar_t*>(out));
}

RowsFn rows_fn(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return &broadcast_rows_erased<float>;
    case at::kHalf: return &broadcast_rows_erased<at::Half>;
    case at::kBFloat16: return &broadcast_rows_erased<at::BFloat16>;
    default: TORCH_CHECK(false, "kd_loss (cpp): gradients are float32, float16 or bfloat16, got ", dtype);
  }
  return nullptr;
}

// Per class: gs_c = coef_s (p_c - q_c) and, when gt != nullptr, gt_c = coef_t q_c (d_c - kl), 0
// where q_c = 0 (selected before the products: d_c may be NaN there and kl may be +inf). Two
// loops without branches or conditional loads, so both vectorise.
KD_LOSS_HOT void class_grads(const float* a, const float* v, const float* st, float coef_s, float coef_t,
                             int64_t C, float* gs, float* gt) {
  const float a_max = st[0], a_logsum = st[1], v_max = st[2], v_logsum = st[3], kl = st[4];
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < C; ++c) {
    const float q = host_expf((a[c] - a_max) - a_logsum), p = host_expf((v[c] - v_max) - v_logsum);
    gs[c] = coef_s * (p - q);
  }
  if (!gt) return;
  for (int64_t c = 0; c < C; ++c) {
    const float ac = a[c];
    const float log_q = (ac - a_max) - a_logsum;
    const float log_p = (v[c] - v_max) - v_logsum;
    const float q = host_expf(log_q);
    const float dev = (ac == kNegInf ? 0.0f : log_q - log_p) - kl;
    gt[c] = coef_t * (q * (q > 0.0f ? dev : 0.0f));
  }
}

std::tuple<at::Tensor, at::Tensor> kd_loss_backward_cpu(const at::Tensor& saved, const at::Tensor& grad_loss,
                                                        int64_t student_steps, int64_t teacher_steps,
                                                        double temperature, bool student_grad, bool teacher_grad,
                                                        at::ScalarType student_dtype,
                                                        at::ScalarType teacher_dtype) {
  TORCH_CHECK(saved.device().is_cpu() && saved.scalar_type() == at::kFloat && saved.dim() == 2 &&
                  saved.size(1) > kKdStats && (saved.size(1) - kKdStats) % 2 == 0,
              "kd_loss (cpp): saved must be the forward's float32 [B, 2C + 8], got ", saved.sizes());
  TORCH_CHECK(student_steps >= 1 && teacher_steps >= 1, "kd_loss (cpp): student_steps and teacher_steps must be >= 1");
  TORCH_CHECK(temperature > 0.0, "kd_loss (cpp): temperature must be > 0, got ", temperature);
  const int64_t B = saved.size(0), C = (saved.size(1) - kKdStats) / 2, row = saved.size(1);
  TORCH_CHECK(grad_loss.dim() == 1 && grad_loss.size(0) == B, "kd_loss (cpp): grad_loss must be [B] = [", B,
              "], got ", grad_loss.sizes());
  const at::Tensor sv = saved.contiguous();
  const at::Tensor g = grad_loss.to(at::kFloat);
  auto opts = saved.options();
  at::Tensor grad_s = student_grad ? at::empty({student_steps, B, C}, opts.dtype(student_dtype)) : at::empty({0}, opts);
  at::Tensor grad_t = teacher_grad ? at::empty({teacher_steps, B, C}, opts.dtype(teacher_dtype)) : at::empty({0}, opts);
  if (!student_grad && !teacher_grad) return {grad_s, grad_t};
  const RowsFn student_rows = student_grad ? rows_fn(student_dtype) : nullptr;
  const RowsFn teacher_rows = teacher_grad ? rows_fn(teacher_dtype) : nullptr;
  void* gs_ptr = student_grad ? grad_s.data_ptr() : nullptr;
  void* gt_ptr = teacher_grad ? grad_t.data_ptr() : nullptr;
  const float* sv_ptr = sv.const_data_ptr<float>();
  const float* g_ptr = g.const_data_ptr<float>();
  const int64_t g_stride = g.stride(0);
  const double ts = static_cast<double>(student_steps), tt = static_cast<double>(teacher_steps);

  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> gs(kSampleBlock * C), gt(teacher_grad ? kSampleBlock * C : 0);
    for (int64_t b0 = begin; b0 < end; b0 += kSampleBlock) {
      const int64_t b1 = std::min(b0 + kSampleBlock, end);
      for (int64_t b = b0; b < b1; ++b) {
        const float* a = sv_ptr + b * row;
        const float* v = a + C;
        const float* st = v + C;
        const double gb = g_ptr[b * g_stride];
        const float coef_s = static_cast<float>(gb * temperature / ts);
        const float coef_t = static_cast<float>(gb * temperature / tt);
        class_grads(a, v, st, coef_s, coef_t, C, gs.data() + (b - b0) * C,
                    teacher_grad ? gt.data() + (b - b0) * C : nullptr);
      }
      if (student_grad) student_rows(gs.data(), student_steps, B, b0, b1, C, gs_ptr);
      if (teacher_grad) teacher_rows(gt.data(), teacher_steps, B, b0, b1, C, gt_ptr);
    }
  });
  return {grad_s, grad_t};
}

}  // namespace

// Schemas; the fake (meta) implementations and the autograd formula are registered in Python, in
// the module named here, which tks_kernels._ext imports right after loading this extension.
TORCH_LIBRARY_FRAGMENT(tks, m) {
  m.set_python_module("tks_kernels.kd_loss.cpp");
  // (loss [B] fp32 = tau^2 KL per sample, saved [B, 2C + 8] fp32: a, v, statistics)
  m.def("kd_loss_forward(Tensor student, Tensor teacher, float temperature) -> (Tensor, Tensor)");
  // (grad_student [Ts, B, C] in student_dtype or [0] unless student_grad, grad_teacher likewise)
  m.def(
      "kd_loss_backward(Tensor saved, Tensor grad_loss, int student_steps, int teacher_steps, float temperature, "
      "bool student_grad, bool teacher_grad, ScalarType student_dtype, ScalarType teacher_dtype) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tks, CPU, m) {
  m.impl("kd_loss_forward", &kd_loss_forward_cpu);
  m.impl("kd_loss_backward", &kd_loss_backward_cpu);
}

}  // namespace tks
