// TKS loss on the CPU: forward and backward, one sample per task (ATen's OpenMP pool).
//
// Same math, outputs and saved statistics as the Triton kernels (tks_kernels/tks_loss/triton.py):
// per sample b, z_t = logits[t, b], y = target[b], m_t = [argmax z_t == y] (first maximum),
// w = 1 ("sum" teacher) or 1 / max(sum_t m_t, 1) ("mean"):
//   zbar = mean_t z_t, u = w sum_t m_t z_t, p = softmax(u / tau)
//   ce = lse(zbar) - zbar_y,  kd = tau^2 / T sum_t sum_c p_c (lse(z_t) - z_{t,c}),
//   loss = (1 - lam) ce + lam kd.
// Backward, g_ce = (1 - lam) g_loss + g_ce_out, g_kd = lam g_loss + g_kd_out:
//   dz_{t,c} = g_ce / T (softmax(zbar)_c - [c = y]) + g_kd tau^2 / T (softmax(z_t)_c - p_c)
//            - g_kd tau w m_t p_c (zbar_c - p.zbar)          (unless the teacher is detached)
// with zbar_c - p.zbar = p.N - N_c, N_c = mean_t (lse(z_t) - z_{t,c}) >= 0 (well conditioned).
//
// -inf logits (masked classes), as tks_kernels/tks_loss/__init__.py documents: a class whose mean
// zbar_c is -inf (-inf at some step) gets teacher probability 0 (u_c / tau is replaced by -inf),
// every product p_c * (...) with p_c = 0 is 0 (0 log 0 = 0: N_c is +inf there), the teacher sums
// the selected steps with a select, not m_t * z (0 * -inf = NaN), and a term whose weight lam or
// 1 - lam is 0 is left out of the loss (ce is +inf when the label's class is masked).
//
// Speed: elements are read as float and all per-class work is fp32 in loops that stream over the
// class dim (contiguous) with kLanes independent partial sums, so GCC vectorises them; exp is a
// branch-free polynomial (host_expf) that vectorises too, where std::exp would stay scalar. The
// row statistics (max, log-sum-exp, softmax expectations) are csrc/common/softmax_rows.h, shared
// with the KD loss. The hot loops are compiled twice (AVX2 and baseline x86-64, picked at load time through
// target_clones). Every sum over classes has non-negative terms (exp, lse(z_t) - z_{t,c}), so fp32
// partial sums lose nothing that matters (relative error ~ C * 2^-24 worst case, ~1e-7 typical).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/host_expf.h"
#include "common/softmax_rows.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

// Hot per-class loops: an AVX2 clone and a baseline one, chosen once by the dynamic loader.
// No FMA either way (-ffp-contract=off), so both clones round the same.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
#define TKS_LOSS_HOT __attribute__((target_clones("avx2", "default")))
#else
#define TKS_LOSS_HOT
#endif

namespace tks {
namespace {

constexpr int64_t kNumStats = 8;  // zbar_max, zbar_logsum, u_max, u_logsum, p_dot_nll, w, n_selected, unused

// First index of the maximum, as torch.argmax (a NaN in front wins, as the scalar scan it replaces).
int64_t first_argmax(const float* x, float mx, int64_t C) {
  if (std::isnan(x[0])) return 0;
  for (int64_t c = 0; c < C; ++c) {
    if (x[c] == mx) return c;
  }
  return 0;
}

// One pass over a sample's rows z + t * ld, t-outer and class-inner (contiguous):
// zsum_c = sum_t z_{t,c}, usum_c = sum_t m_t z_{t,c}, and when nll != nullptr
// nll_c = sum_t (max_t - z_{t,c}) + logsum_t (= T N_c; every term >= 0, so no cancellation).
// Each class sums over t in order, as the per-class scalar loop did.
TKS_LOSS_HOT void sample_sums(const float* z, int64_t ld, const float* m, const float* mx, const float* ls,
                              int64_t T, int64_t C, float* zsum, float* usum, float* nll) {
  std::fill(zsum, zsum + C, 0.0f);
  std::fill(usum, usum + C, 0.0f);
  if (nll) std::fill(nll, nll + C, 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    const float* zt = z + t * ld;
    for (int64_t c = 0; c < C; ++c) zsum[c] += zt[c];
    if (m[t] != 0.0f) {  // a selected step (m_t is 0 or 1): summed as it is, never 0 * z (0 * -inf = NaN)
      for (int64_t c = 0; c < C; ++c) usum[c] += zt[c];
    }
    if (nll) {
      const float mxt = mx[t], lst = ls[t];
      for (int64_t c = 0; c < C; ++c) nll[c] += (mxt - zt[c]) + lst;
    }
  }
}

// Backward per-class terms of one sample: p_c = softmax(v)_c, ce_part_c = coef_ce softmax(zbar)_c
// (the caller subtracts coef_ce at y), teacher_c = coef_teacher p_c (p.N - nll_c / T) when nll given.
TKS_LOSS_HOT void class_terms(const float* zbar, const float* v, const float* nll, const float* st, float coef_ce,
                              float coef_teacher, float inv_t, int64_t C, float* ce_part, float* p, float* teacher) {
  const float zbar_max = st[0], zbar_logsum = st[1], u_max = st[2], u_logsum = st[3], p_dot_n = st[4];
  for (int64_t c = 0; c < C; ++c) {
    ce_part[c] = coef_ce * host_expf((zbar[c] - zbar_max) - zbar_logsum);
    p[c] = host_expf((v[c] - u_max) - u_logsum);
  }
  if (nll) {  // 0 where p_c = 0 (nll_c may be +inf there); loads outside the select: it vectorises
    for (int64_t c = 0; c < C; ++c) {
      const float pc = p[c], dev = p_dot_n - nll[c] * inv_t;
      teacher[c] = coef_teacher * pc * (pc > 0.0f ? dev : 0.0f);
    }
  }
}

// One row of the gradient: out_c = ce_part_c + coef_student (softmax(z_t)_c - p_c) [- teacher_c].
TKS_LOSS_HOT void grad_row(const float* zt, float mx, float ls, const float* ce_part, const float* p,
                           const float* teacher, float coef_student, int64_t C, float* out) {
  if (teacher) {
    for (int64_t c = 0; c < C; ++c) {
      const float sm = host_expf((zt[c] - mx) - ls);
      out[c] = (ce_part[c] + coef_student * (sm - p[c])) - teacher[c];
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
      const float sm = host_expf((zt[c] - mx) - ls);
      out[c] = ce_part[c] + coef_student * (sm - p[c]);
    }
  }
}

void check_inputs(const at::Tensor& logits, const at::Tensor& target, double lam, double temperature) {
  TORCH_CHECK(logits.device().is_cpu(), "tks_loss (cpp): logits must be a CPU tensor, got ", logits.device());
  TORCH_CHECK(target.device().is_cpu(), "tks_loss (cpp): target must be a CPU tensor, got ", target.device());
  TORCH_CHECK(logits.dim() == 3, "tks_loss (cpp): logits must be [T, B, C], got ", logits.sizes());
  TORCH_CHECK(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kHalf ||
                  logits.scalar_type() == at::kBFloat16,
              "tks_loss (cpp): logits must be float32, float16 or bfloat16, got ", logits.scalar_type());
  TORCH_CHECK(target.scalar_type() == at::kLong, "tks_loss (cpp): target must be int64, got ", target.scalar_type());
  const int64_t T = logits.size(0), B = logits.size(1), C = logits.size(2);
  TORCH_CHECK(T >= 1 && B >= 1 && C >= 1, "tks_loss (cpp): logits must have T, B, C >= 1, got ", logits.sizes());
  TORCH_CHECK(target.dim() == 1 && target.size(0) == B, "tks_loss (cpp): target must be [B] = [", B, "], got ",
              target.sizes());
  TORCH_CHECK(lam >= 0.0 && lam <= 1.0, "tks_loss (cpp): lam must be in [0, 1], got ", lam);
  TORCH_CHECK(temperature > 0.0, "tks_loss (cpp): temperature must be > 0, got ", temperature);
  const int64_t* y = target.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(y[b] >= 0 && y[b] < C, "tks_loss (cpp): target[", b, "] = ", y[b], " is outside [0, ", C, ")");
  }
}

// The sample's [T, C] slab as float, row t at out[t * C] (half and bfloat16 logits).
template <typename scalar_t>
void load_sample(const scalar_t* logits, int64_t b, int64_t T, int64_t C, int64_t stride_t, int64_t stride_b,
                 float* out) {
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t* row = logits + t * stride_t + b * stride_b;
    for (int64_t c = 0; c < C; ++c) out[t * C + c] = static_cast<float>(row[c]);
  }
}

// Sample b's rows as float: float logits are read in place (row t at z + t * ld), others converted
// into slab first.
template <typename scalar_t>
const float* sample_rows(const scalar_t* logits, int64_t b, int64_t T, int64_t C, int64_t stride_t,
                         int64_t stride_b, std::vector<float>& slab, int64_t& ld) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    ld = stride_t;
    return logits + b * stride_b;
  } else {
    slab.resize(T * C);
    load_sample(logits, b, T, C, stride_t, stride_b, slab.data());
    ld = C;
    return slab.data();
  }
}

// zbar = zsum / T and v = u / tau = usum w / tau, in place; v_c = -inf where zbar_c = -inf (a
// class masked at some step gets teacher probability 0).
void finish_means(float* zbar, float* v, float w, float inv_tau, int64_t T, int64_t C) {
  const float inv_t = 1.0f / static_cast<float>(T);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < C; ++c) {
    zbar[c] = zbar[c] * inv_t;
    v[c] = zbar[c] == kNegInf ? kNegInf : v[c] * w * inv_tau;
  }
}

// (1 - lam) ce + lam kd, a term of weight 0 left out (ce may be +inf: 0 * inf would be NaN).
double mix(double lam, double ce, double kd) {
  if (lam == 0.0) return ce;
  if (lam == 1.0) return kd;
  return (1.0 - lam) * ce + lam * kd;
}

template <typename scalar_t>
void forward_kernel(const at::Tensor& logits, const at::Tensor& target, double lam, double temperature,
                    bool teacher_mean, at::Tensor& loss, at::Tensor& ce, at::Tensor& kd, at::Tensor& row_max,
                    at::Tensor& row_logsum, at::Tensor& mask, at::Tensor& stats) {
  const int64_t T = logits.size(0), B = logits.size(1), C = logits.size(2);
  const int64_t stride_t = logits.stride(0), stride_b = logits.stride(1);
  const scalar_t* z_ptr = logits.const_data_ptr<scalar_t>();
  const int64_t* y_ptr = target.const_data_ptr<int64_t>();
  float* loss_ptr = loss.data_ptr<float>();
  float* ce_ptr = ce.data_ptr<float>();
  float* kd_ptr = kd.data_ptr<float>();
  float* row_max_ptr = row_max.data_ptr<float>();
  float* row_logsum_ptr = row_logsum.data_ptr<float>();
  float* mask_ptr = mask.data_ptr<float>();
  float* stats_ptr = stats.data_ptr<float>();
  const float inv_tau = static_cast<float>(1.0 / temperature);
  const double kd_scale = temperature * temperature / static_cast<double>(T);

  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> slab, zbar(C), v(C), nll(C);
    for (int64_t b = begin; b < end; ++b) {
      int64_t ld = 0;
      const float* z = sample_rows(z_ptr, b, T, C, stride_t, stride_b, slab, ld);
      const int64_t y = y_ptr[b];
      float* mx = row_max_ptr + b * T;
      float* ls = row_logsum_ptr + b * T;
      float* m = mask_ptr + b * T;
      float n_sel = 0.0f;
      for (int64_t t = 0; t < T; ++t) {
        const float* zt = z + t * ld;
        std::tie(mx[t], ls[t]) = max_logsum(zt, C);
        m[t] = first_argmax(zt, mx[t], C) == y ? 1.0f : 0.0f;
        n_sel += m[t];
      }
      const float w = teacher_mean ? 1.0f / std::max(n_sel, 1.0f) : 1.0f;
      sample_sums(z, ld, m, mx, ls, T, C, zbar.data(), v.data(), nll.data());
      finish_means(zbar.data(), v.data(), w, inv_tau, T, C);
      const auto [zbar_max, zbar_logsum] = max_logsum(zbar.data(), C);
      const auto [u_max, u_logsum] = max_logsum(v.data(), C);
      const auto [u_sum, u_dot_nll] = weighted_exp_sums(v.data(), u_max, nll.data(), C);
      const double p_dot_nll = static_cast<double>(u_dot_nll) / static_cast<double>(u_sum);
      const double ce_b = static_cast<double>(zbar_max - zbar[y]) + zbar_logsum;
      const double kd_b = kd_scale * p_dot_nll;
      loss_ptr[b] = static_cast<float>(mix(lam, ce_b, kd_b));
      ce_ptr[b] = static_cast<float>(ce_b);
      kd_ptr[b] = static_cast<float>(kd_b);
      float* st = stats_ptr + b * kNumStats;
      st[0] = zbar_max;
      st[1] = zbar_logsum;
      st[2] = u_max;
      st[3] = u_logsum;
      st[4] = static_cast<float>(p_dot_nll / static_cast<double>(T));  // p . N
      st[5] = w;
      st[6] = n_sel;
      st[7] = 0.0f;
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> tks_loss_forward_cpu(
    const at::Tensor& logits, const at::Tensor& target, double lam, double temperature, bool teacher_mean,
    bool detach_teacher) {
  (void)detach_teacher;  // used by the backward only; an input here so autograd can see it
  check_inputs(logits, target, lam, temperature);
  const int64_t T = logits.size(0), B = logits.size(1);
  // class dim contiguous; any strides for T and B
  const at::Tensor z = logits.stride(2) == 1 ? logits : logits.contiguous();
  const at::Tensor y = target.contiguous();
  auto f32 = logits.options().dtype(at::kFloat);
  at::Tensor loss = at::empty({B}, f32), ce = at::empty({B}, f32), kd = at::empty({B}, f32);
  at::Tensor row_max = at::empty({B, T}, f32), row_logsum = at::empty({B, T}, f32), mask = at::empty({B, T}, f32);
  at::Tensor stats = at::empty({B, kNumStats}, f32);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "tks_loss_forward_cpu", [&] {
    forward_kernel<scalar_t>(z, y, lam, temperature, teacher_mean, loss, ce, kd, row_max, row_logsum, mask, stats);
  });
  return {loss, ce, kd, row_max, row_logsum, mask, stats};
}

// Per-sample upstream gradient of an optional [B] tensor (any stride), 0 when absent.
struct Upstream {
  const float* ptr = nullptr;
  int64_t stride = 0;
  at::Tensor keep;
  Upstream(const std::optional<at::Tensor>& g, int64_t B) {
    if (g.has_value() && g->defined()) {
      TORCH_CHECK(g->dim() == 1 && g->size(0) == B, "tks_loss (cpp): upstream gradient must be [B], got ",
                  g->sizes());
      keep = g->to(at::kFloat);
      ptr = keep.const_data_ptr<float>();
      stride = keep.stride(0);
    }
  }
  float at(int64_t b) const { return ptr ? ptr[b * stride] : 0.0f; }
};

template <typename scalar_t>
void backward_kernel(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& row_max,
                     const at::Tensor& row_logsum, const at::Tensor& mask, const at::Tensor& stats,
                     const Upstream& g_loss, const Upstream& g_ce_out, const Upstream& g_kd_out, double lam,
                     double temperature, bool detach_teacher, at::Tensor& grad) {
  const int64_t T = logits.size(0), B = logits.size(1), C = logits.size(2);
  const int64_t stride_t = logits.stride(0), stride_b = logits.stride(1);
  const scalar_t* z_ptr = logits.const_data_ptr<scalar_t>();
  scalar_t* grad_ptr = grad.data_ptr<scalar_t>();
  const int64_t* y_ptr = target.const_data_ptr<int64_t>();
  const float* mx_ptr = row_max.const_data_ptr<float>();
  const float* ls_ptr = row_logsum.const_data_ptr<float>();
  const float* m_ptr = mask.const_data_ptr<float>();
  const float* st_ptr = stats.const_data_ptr<float>();
  const float inv_tau = static_cast<float>(1.0 / temperature);
  const double inv_t = 1.0 / static_cast<double>(T);
  constexpr bool kFloatOut = std::is_same_v<scalar_t, float>;

  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> slab, zbar(C), v(C), nll(C), ce_part(C), p(C), teacher(C), row(kFloatOut ? 0 : C);
    for (int64_t b = begin; b < end; ++b) {
      int64_t ld = 0;
      const float* z = sample_rows(z_ptr, b, T, C, stride_t, stride_b, slab, ld);
      const int64_t y = y_ptr[b];
      const float* mx = mx_ptr + b * T;
      const float* ls = ls_ptr + b * T;
      const float* m = m_ptr + b * T;
      const float* st = st_ptr + b * kNumStats;
      const float w = st[5];
      float* nll_or_null = detach_teacher ? nullptr : nll.data();
      sample_sums(z, ld, m, mx, ls, T, C, zbar.data(), v.data(), nll_or_null);
      finish_means(zbar.data(), v.data(), w, inv_tau, T, C);
      const double g = g_loss.at(b);
      const double g_ce = (1.0 - lam) * g + g_ce_out.at(b);
      const double g_kd = lam * g + g_kd_out.at(b);
      const float coef_ce = static_cast<float>(g_ce * inv_t);
      const float coef_student = static_cast<float>(g_kd * temperature * temperature * inv_t);
      const float coef_teacher = static_cast<float>(g_kd * temperature * w);
      class_terms(zbar.data(), v.data(), nll_or_null, st, coef_ce, coef_teacher, static_cast<float>(inv_t), C,
                  ce_part.data(), p.data(), teacher.data());
      ce_part[y] = coef_ce * (host_expf((zbar[y] - st[0]) - st[1]) - 1.0f);
      for (int64_t t = 0; t < T; ++t) {
        scalar_t* out = grad_ptr + t * B * C + b * C;  // grad is contiguous [T, B, C]
        const float* teacher_or_null = !detach_teacher && m[t] != 0.0f ? teacher.data() : nullptr;
        float* dst = kFloatOut ? reinterpret_cast<float*>(out) : row.data();
        grad_row(z + t * ld, mx[t], ls[t], ce_part.data(), p.data(), teacher_or_null, coef_student, C, dst);
        if constexpr (!kFloatOut) {
          for (int64_t c = 0; c < C; ++c) out[c] = static_cast<scalar_t>(row[c]);
        }
      }
    }
  });
}

at::Tensor tks_loss_backward_cpu(const at::Tensor& logits, const at::Tensor& target, const at::Tensor& row_max,
                                 const at::Tensor& row_logsum, const at::Tensor& mask, const at::Tensor& stats,
                                 const std::optional<at::Tensor>& grad_loss, const std::optional<at::Tensor>& grad_ce,
                                 const std::optional<at::Tensor>& grad_kd, double lam, double temperature,
                                 bool detach_teacher) {
  check_inputs(logits, target, lam, temperature);
  const int64_t T = logits.size(0), B = logits.size(1), C = logits.size(2);
  for (const at::Tensor* s : {&row_max, &row_logsum, &mask}) {
    TORCH_CHECK(s->scalar_type() == at::kFloat && s->sizes() == at::IntArrayRef({B, T}),
                "tks_loss (cpp): saved per-step statistics must be float32 [B, T]");
  }
  TORCH_CHECK(stats.scalar_type() == at::kFloat && stats.sizes() == at::IntArrayRef({B, kNumStats}),
              "tks_loss (cpp): saved per-sample statistics must be float32 [B, 8]");
  const at::Tensor z = logits.stride(2) == 1 ? logits : logits.contiguous();
  at::Tensor grad = at::empty({T, B, C}, logits.options());
  Upstream g_loss(grad_loss, B), g_ce(grad_ce, B), g_kd(grad_kd, B);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "tks_loss_backward_cpu", [&] {
    backward_kernel<scalar_t>(z, target.contiguous(), row_max.contiguous(), row_logsum.contiguous(),
                              mask.contiguous(), stats.contiguous(), g_loss, g_ce, g_kd, lam, temperature,
                              detach_teacher, grad);
  });
  return grad;
}

}  // namespace

// The fake (meta) implementations and the autograd formula are registered in Python, in the module
// named here, which tks_kernels._ext imports right after loading this extension (plain Python, not
// code that torch.compile traces: registering while dynamo traces fails).
TORCH_LIBRARY_FRAGMENT(tks, m) {
  m.set_python_module("tks_kernels.tks_loss.cpp");
  m.def(
      "tks_loss_forward(Tensor logits, Tensor target, float lam, float temperature, bool teacher_mean, "
      "bool detach_teacher) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "tks_loss_backward(Tensor logits, Tensor target, Tensor row_max, Tensor row_logsum, Tensor mask, "
      "Tensor stats, Tensor? grad_loss, Tensor? grad_ce, Tensor? grad_kd, float lam, float temperature, "
      "bool detach_teacher) -> Tensor");
}

TORCH_LIBRARY_IMPL(tks, CPU, m) {
  m.impl("tks_loss_forward", &tks_loss_forward_cpu);
  m.impl("tks_loss_backward", &tks_loss_backward_cpu);
}

}  // namespace tks
