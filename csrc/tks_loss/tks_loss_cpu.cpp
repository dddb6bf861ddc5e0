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
// Elements are read as float; sums over classes accumulate in double.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

namespace tks {
namespace {

constexpr int64_t kNumStats = 8;  // zbar_max, zbar_logsum, u_max, u_logsum, p_dot_nll, w, n_selected, unused

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

// The sample's [T, C] slab as float, row t at out[t * C].
template <typename scalar_t>
void load_sample(const scalar_t* logits, int64_t b, int64_t T, int64_t C, int64_t stride_t, int64_t stride_b,
                 float* out) {
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t* row = logits + t * stride_t + b * stride_b;
    for (int64_t c = 0; c < C; ++c) out[t * C + c] = static_cast<float>(row[c]);
  }
}

// zbar and v = u / tau of one sample.
void mean_and_teacher(const float* z, const float* m, float w, float inv_tau, int64_t T, int64_t C, float* zbar,
                      float* v) {
  const float inv_t = 1.0f / static_cast<float>(T);
  for (int64_t c = 0; c < C; ++c) {
    float s = 0.0f, u = 0.0f;
    for (int64_t t = 0; t < T; ++t) {
      s += z[t * C + c];
      u += m[t] * z[t * C + c];
    }
    zbar[c] = s * inv_t;
    v[c] = u * w * inv_tau;
  }
}

// max and log(sum exp(x - max)) of x[0:C].
std::pair<float, float> max_logsum(const float* x, int64_t C) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < C; ++c) mx = x[c] > mx ? x[c] : mx;
  double s = 0.0;
  for (int64_t c = 0; c < C; ++c) s += std::exp(static_cast<double>(x[c] - mx));
  return {mx, static_cast<float>(std::log(s))};
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
    std::vector<float> z(T * C), zbar(C), v(C);
    for (int64_t b = begin; b < end; ++b) {
      load_sample(z_ptr, b, T, C, stride_t, stride_b, z.data());
      const int64_t y = y_ptr[b];
      float* mx = row_max_ptr + b * T;
      float* ls = row_logsum_ptr + b * T;
      float* m = mask_ptr + b * T;
      float n_sel = 0.0f;
      for (int64_t t = 0; t < T; ++t) {
        const float* zt = z.data() + t * C;
        int64_t arg = 0;  // first maximum, as torch.argmax
        for (int64_t c = 1; c < C; ++c) arg = zt[c] > zt[arg] ? c : arg;
        std::tie(mx[t], ls[t]) = max_logsum(zt, C);
        m[t] = arg == y ? 1.0f : 0.0f;
        n_sel += m[t];
      }
      const float w = teacher_mean ? 1.0f / std::max(n_sel, 1.0f) : 1.0f;
      mean_and_teacher(z.data(), m, w, inv_tau, T, C, zbar.data(), v.data());
      const auto [zbar_max, zbar_logsum] = max_logsum(zbar.data(), C);
      const auto [u_max, u_logsum] = max_logsum(v.data(), C);
      double u_sum = 0.0, u_dot_nll = 0.0;
      for (int64_t c = 0; c < C; ++c) {
        const double e = std::exp(static_cast<double>(v[c] - u_max));
        // -log_softmax(z_t)_c = (max_t - z_{t,c}) + logsum_t >= 0: no cancellation
        double nll = 0.0;
        for (int64_t t = 0; t < T; ++t) nll += static_cast<double>(mx[t] - z[t * C + c]) + ls[t];
        u_sum += e;
        u_dot_nll += e * nll;
      }
      const double ce_b = static_cast<double>(zbar_max - zbar[y]) + zbar_logsum;
      const double kd_b = kd_scale * u_dot_nll / u_sum;
      loss_ptr[b] = static_cast<float>((1.0 - lam) * ce_b + lam * kd_b);
      ce_ptr[b] = static_cast<float>(ce_b);
      kd_ptr[b] = static_cast<float>(kd_b);
      float* st = stats_ptr + b * kNumStats;
      st[0] = zbar_max;
      st[1] = zbar_logsum;
      st[2] = u_max;
      st[3] = u_logsum;
      st[4] = static_cast<float>(u_dot_nll / u_sum / static_cast<double>(T));  // p . N
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

  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> z(T * C), zbar(C), v(C), ce_part(C), p(C), teacher_term(C);
    for (int64_t b = begin; b < end; ++b) {
      load_sample(z_ptr, b, T, C, stride_t, stride_b, z.data());
      const int64_t y = y_ptr[b];
      const float* mx = mx_ptr + b * T;
      const float* ls = ls_ptr + b * T;
      const float* m = m_ptr + b * T;
      const float* st = st_ptr + b * kNumStats;
      const float w = st[5];
      mean_and_teacher(z.data(), m, w, inv_tau, T, C, zbar.data(), v.data());
      const double g = g_loss.at(b);
      const double g_ce = (1.0 - lam) * g + g_ce_out.at(b);
      const double g_kd = lam * g + g_kd_out.at(b);
      const double coef_ce = g_ce * inv_t;
      const double coef_student = g_kd * temperature * temperature * inv_t;
      const double coef_teacher = g_kd * temperature * w;
      for (int64_t c = 0; c < C; ++c) {
        const double sz = std::exp(static_cast<double>(zbar[c] - st[0]) - st[1]);
        p[c] = static_cast<float>(std::exp(static_cast<double>(v[c] - st[2]) - st[3]));
        ce_part[c] = static_cast<float>(coef_ce * (sz - (c == y ? 1.0 : 0.0)));
      }
      if (!detach_teacher) {
        for (int64_t c = 0; c < C; ++c) {
          double nll_bar = 0.0;
          for (int64_t t = 0; t < T; ++t) nll_bar += static_cast<double>(mx[t] - z[t * C + c]) + ls[t];
          teacher_term[c] = static_cast<float>(coef_teacher * p[c] * (st[4] - nll_bar * inv_t));
        }
      }
      for (int64_t t = 0; t < T; ++t) {
        scalar_t* out = grad_ptr + t * B * C + b * C;  // grad is contiguous [T, B, C]
        const bool teaches = !detach_teacher && m[t] != 0.0f;
        for (int64_t c = 0; c < C; ++c) {
          const double sm = std::exp(static_cast<double>(z[t * C + c] - mx[t]) - ls[t]);
          double d = ce_part[c] + coef_student * (sm - p[c]);
          if (teaches) d -= teacher_term[c];
          out[c] = static_cast<scalar_t>(static_cast<float>(d));
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

TORCH_LIBRARY_FRAGMENT(tks, m) {
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
