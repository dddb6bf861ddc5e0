// Torch side of the LIF ops, shared by the CPU (lif_cpu.cpp) and CUDA (lif_cuda.cpp) bindings:
// argument checks (TORCH_CHECK on device, dtype, shape), output allocation, and the raw-pointer
// argument structs handed to the kernels. The schemas are in lif_ops.cpp.
#pragma once

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/accumulate.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "lif/lif_kernel.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace tks {
namespace lif {

using TensorTriple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

inline std::string device_hint(c10::DeviceType kernel) {
  return kernel == c10::DeviceType::CUDA
             ? "the CUDA kernel takes CUDA tensors (use backend='cpp' for CPU tensors, or move them with .cuda())"
             : "the CPU kernel takes CPU tensors (use backend='cuda' or 'triton' for CUDA tensors, or move them with .cpu())";
}

inline DType check_io_dtype(const char* op, const char* name, at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::kFloat32;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default:
      TORCH_CHECK(false, op, ": ", name, " has dtype ", t, "; expected float32, float16 or bfloat16");
  }
  return DType::kFloat32;
}

// `t` lives where the kernel runs, on x_seq's device.
inline void check_device(const char* op, const char* name, const at::Tensor& t, const at::Device& device,
                         c10::DeviceType kernel) {
  TORCH_CHECK(t.device().type() == kernel, op, ": ", name, " is on ", t.device(), "; ", device_hint(kernel));
  TORCH_CHECK(t.device() == device, op, ": ", name, " is on ", t.device(), " but x_seq is on ", device,
              "; put every tensor on one device");
}

inline void check_float(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_floating_point(), op, ": ", name, " has dtype ", t.scalar_type(), "; expected a float tensor");
}

inline LIFParams make_params(int64_t leak, double tau, bool decay_input, double v_threshold, double v_reset,
                             bool soft_reset, bool detach_reset, int64_t surrogate, double alpha, bool store_v_seq,
                             int64_t max_spike_count, double grad_min, double grad_max, bool count_lif_charge) {
  const char* op = "tks::lif";
  TORCH_CHECK(leak == kLeakIF || leak == kLeakDiv || leak == kLeakMul, op,
              ": leak must be 0 (IF), 1 (float tau) or 2 (decay tensor), got ", leak);
  TORCH_CHECK(leak != kLeakDiv || (std::isfinite(tau) && tau > 0.0), op, ": tau must be finite and > 0, got ", tau);
  TORCH_CHECK(surrogate >= 0 && surrogate < kNumSurrogates, op, ": surrogate id ", surrogate,
              " is unknown (tks_kernels.lif.SURROGATES lists the ids)");
  TORCH_CHECK(std::isfinite(alpha) && alpha > 0.0, op, ": alpha must be finite and > 0, got ", alpha);
  TORCH_CHECK(std::isfinite(v_threshold) && std::isfinite(v_reset), op, ": v_threshold and v_reset must be finite");
  LIFParams p;
  p.leak = static_cast<int>(leak);
  p.decay_input = decay_input;
  p.soft_reset = soft_reset;
  p.detach_reset = detach_reset;
  p.store_v_seq = store_v_seq;
  p.surrogate = static_cast<int>(surrogate);
  // The reference computes in fp32 with the Python floats rounded to fp32 (tensor-scalar ops).
  p.tau = static_cast<float>(tau);
  p.v_threshold = static_cast<float>(v_threshold);
  p.v_reset = soft_reset ? 0.0f : static_cast<float>(v_reset);
  p.alpha = static_cast<float>(alpha);
  TORCH_CHECK(max_spike_count >= 0 && max_spike_count <= (int64_t{1} << 24), op,
              ": max_spike_count must be 0 (binary spikes) or from 1 to 2^24, got ", max_spike_count);
  p.max_spike_count = max_spike_count;
  p.count = static_cast<float>(max_spike_count);
  p.count_decay = 1.0f;
  p.grad_min = p.grad_max = p.inv_threshold = 0.0f;
  p.count_lif_charge = max_spike_count > 0 && count_lif_charge;
  if (max_spike_count > 0) {
    TORCH_CHECK(soft_reset && !decay_input, op, ": spike counts (max_spike_count > 0) need soft_reset=True and "
                "decay_input=False");
    TORCH_CHECK(v_threshold > 0.0, op, ": spike counts need v_threshold > 0, got ", v_threshold);
    TORCH_CHECK(std::isfinite(grad_min) && std::isfinite(grad_max) && grad_min <= grad_max, op,
                ": the gradient window must be finite with grad_min <= grad_max, got [", grad_min, ", ", grad_max, "]");
    // spikingjelly's reference: the Python float 1 - 1/tau (double), rounded to fp32 by the tensor-scalar product
    if (leak == kLeakDiv && !count_lif_charge) p.count_decay = static_cast<float>(1.0 - 1.0 / tau);
    p.grad_min = static_cast<float>(grad_min);
    p.grad_max = static_cast<float>(grad_max);
    p.inv_threshold = 1.0f / p.v_threshold;
  }
  return p;
}

// The memory layout of the outputs, the rule of tks_kernels/lif/layout.py (its fake implementations
// give the same strides). The kernels walk each step's N neurons in memory order, which is right
// for any step that is a permuted contiguous block (channels_last, a transposed matrix): the
// outputs then take x's step strides ([T, *] outputs time-outermost, (N, step strides)) and x is
// read in place. A contiguous step, or one that is not a dense block (x is then copied), gives
// contiguous outputs.
inline bool dense_block(at::IntArrayRef sizes, at::IntArrayRef strides) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size), size-1 dims left out
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] != 1) dims.emplace_back(strides[i], sizes[i]);
  }
  std::sort(dims.begin(), dims.end());
  int64_t expected = 1;
  for (const auto& [stride, size] : dims) {
    if (stride != expected) return false;
    expected *= size;
  }
  return true;
}

struct StepLayout {
  bool permuted = false;      // false: contiguous
  std::vector<int64_t> step;  // the step strides, when permuted

  // strides of a [*] (one step) or [T, *] output, or empty for contiguous
  std::vector<int64_t> strides(at::IntArrayRef sizes, bool seq) const {
    if (!permuted) return {};
    if (!seq) return step;
    std::vector<int64_t> out{c10::multiply_integers(sizes.slice(1))};
    out.insert(out.end(), step.begin(), step.end());
    return out;
  }
};

// layout.step_strides: from x_seq [T, *]
inline StepLayout step_layout(const at::Tensor& x_seq) {
  StepLayout layout;
  const at::Tensor step = x_seq.select(0, 0);
  if (!step.is_contiguous() && dense_block(step.sizes(), step.strides())) {
    layout.permuted = true;
    layout.step = step.strides().vec();
  }
  return layout;
}

// layout.saved_step_strides: from the saved h [T, *] (time stride N), or contiguous
inline StepLayout saved_layout(const at::Tensor& h) {
  StepLayout layout = step_layout(h);
  if (layout.permuted && h.size(0) > 1 && h.stride(0) != h.numel() / h.size(0)) layout = StepLayout{};
  return layout;
}

// t's strides equal `strides` on every dimension of size > 1 (empty `strides`: t is contiguous)
inline bool has_layout(const at::Tensor& t, const std::vector<int64_t>& strides) {
  if (strides.empty()) return t.is_contiguous();
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) != 1 && t.stride(d) != strides[d]) return false;
  }
  return true;
}

// x_seq as [T, N] rows: each step read in place when it already has the layout's step strides
// (the time stride is free), else a copy in the layout.
struct Rows {
  at::Tensor x;
  int64_t T, N, stride_t;
};

inline Rows as_rows(const at::Tensor& x_seq, const StepLayout& layout) {
  Rows r;
  r.T = x_seq.size(0);
  const std::vector<int64_t> step = layout.strides(x_seq.sizes().slice(1), false);
  if (has_layout(x_seq.select(0, 0), step)) {
    r.x = x_seq;
  } else if (!layout.permuted) {
    r.x = x_seq.contiguous();
  } else {
    r.x = at::empty_strided(x_seq.sizes(), layout.strides(x_seq.sizes(), true), x_seq.options());
    r.x.copy_(x_seq);
  }
  r.N = r.x.numel() / std::max<int64_t>(r.T, 1);
  r.stride_t = r.T > 1 ? r.x.stride(0) : r.N;
  return r;
}

// t in `dtype` with the layout's strides: itself when it already is, else a copy
inline at::Tensor as_layout(const at::Tensor& t, const StepLayout& layout, bool seq, at::ScalarType dtype) {
  const std::vector<int64_t> strides = layout.strides(t.sizes(), seq);
  if (t.scalar_type() == dtype && has_layout(t, strides)) return t;
  if (strides.empty()) return t.to(dtype).contiguous();
  at::Tensor out = at::empty_strided(t.sizes(), strides, t.options().dtype(dtype));
  out.copy_(t);
  return out;
}

// A 0-dim (one-element) fp32 tensor on x's device, or nullopt.
inline std::optional<at::Tensor> scalar_fp32(const char* op, const char* name, const std::optional<at::Tensor>& t,
                                             const at::Device& device, c10::DeviceType kernel) {
  if (!t.has_value()) return std::nullopt;
  check_device(op, name, *t, device, kernel);
  check_float(op, name, *t);
  TORCH_CHECK(t->numel() == 1, op, ": ", name, " must have one element (a 0-dim tensor), got shape ", t->sizes());
  return t->to(at::kFloat).contiguous();
}

// A [N] state tensor shaped like one step, as fp32 in the step layout, or nullopt.
inline std::optional<at::Tensor> state_fp32(const char* op, const char* name, const std::optional<at::Tensor>& t,
                                            at::IntArrayRef step_shape, const StepLayout& layout,
                                            const at::Device& device, c10::DeviceType kernel) {
  if (!t.has_value()) return std::nullopt;
  check_device(op, name, *t, device, kernel);
  check_float(op, name, *t);
  TORCH_CHECK(t->sizes() == step_shape, op, ": ", name, " has shape ", t->sizes(), " but one step has shape ",
              step_shape);
  return as_layout(*t, layout, false, at::kFloat);
}

// A fresh, untouched CPU output: ask Linux to back it with 2 MiB pages. The kernel zeroes every
// page on first touch; with 4 KiB pages those faults cost more than the LIF kernel itself (about
// 5 ms per 32 MiB on one core, 1.3 ms with huge pages). A hint only: nothing changes if it fails.
// (torch does the same for all its allocations with THP_MEM_ALLOC_ENABLE=1.)
inline void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = uintptr_t{1} << 21;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + huge - 1) & ~(huge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(huge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

// CPU outputs of 32 MiB and more. glibc's malloc (under torch's CPU allocator) serves such blocks
// with a fresh mmap on every call (32 MiB is the most its mmap threshold ever rises to): Linux
// zeroes every page of it on first touch, inside the kernel that writes it. For the LIF backward at
// T=8, N=2^20 (grad_x 32 MiB) that zeroing cost more than the backward itself: 3.3 ms per call, where
// T=4 (16 MiB, which glibc reuses from its heap without a fault) took 0.7 ms. Two fixes here:
// - the block is mapped 2 MiB-aligned and rounded up to 2 MiB, so all of it takes huge pages
//   (glibc's 4 KiB-aligned block left up to 2 MiB at its two ends to ~512 faults of 4 KiB pages);
// - a freed block goes to a small cache (kOutputCacheBytes at most) and the next output of the same
//   rounded size reuses it, already faulted in: what glibc does for smaller blocks, and what torch's
//   CUDA allocator does for all. Cached blocks are madvise(MADV_FREE)d, so under memory pressure
//   Linux reclaims them instead of swapping (a reclaimed page reads as zero; outputs are written
//   before they are read, as from at::empty). TKS_CPU_OUTPUT_CACHE_MB sets the cache's size in MiB
//   (default 1024; 0 keeps none), read once when the first block is freed.
// Smaller blocks keep torch's allocator.
#if defined(__linux__) && defined(MADV_HUGEPAGE) && defined(MADV_FREE)
#define TKS_LIF_MAPPED_OUTPUTS 1
constexpr size_t kHugePage = size_t{1} << 21;
constexpr size_t kMinMappedOutputBytes = size_t{32} << 20;
constexpr size_t kOutputCacheBytes = size_t{1} << 30;

// The Python loader (tks_kernels._ext) rejects a value that is not a non-negative integer with a
// ValueError before any op runs; anything else reaching here falls back to the default.
inline size_t output_cache_limit() {
  static const size_t limit = [] {
    const char* text = std::getenv("TKS_CPU_OUTPUT_CACHE_MB");
    if (text == nullptr || *text == '\0') return kOutputCacheBytes;
    char* end = nullptr;
    const unsigned long long mib = std::strtoull(text, &end, 10);
    if (end == text || *end != '\0' || mib > (size_t{1} << 24)) return kOutputCacheBytes;
    return static_cast<size_t>(mib) << 20;
  }();
  return limit;
}

struct MappedOutputCache {
  std::mutex mutex;
  std::vector<std::pair<void*, size_t>> blocks;  // (base, bytes), most recently freed last
  size_t bytes = 0;
};

inline MappedOutputCache& mapped_output_cache() {
  static MappedOutputCache* cache = new MappedOutputCache();  // never destroyed: blocks may outlive exit order
  return *cache;
}

struct MappedOutput {
  void* base;
  size_t bytes;
};

inline void release_mapped_output(void* ctx) {
  auto* m = static_cast<MappedOutput*>(ctx);
  MappedOutputCache& cache = mapped_output_cache();
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(cache.mutex);
    if (cache.bytes + m->bytes <= output_cache_limit()) {
      cache.blocks.emplace_back(m->base, m->bytes);
      cache.bytes += m->bytes;
      cached = true;
    }
  }
  if (cached) {
    madvise(m->base, m->bytes, MADV_FREE);
  } else {
    munmap(m->base, m->bytes);
  }
  delete m;
}

inline void* map_huge_page_block(size_t body) {
  {
    MappedOutputCache& cache = mapped_output_cache();
    std::lock_guard<std::mutex> lock(cache.mutex);
    for (size_t i = cache.blocks.size(); i-- > 0;) {
      if (cache.blocks[i].second == body) {
        void* base = cache.blocks[i].first;
        cache.blocks.erase(cache.blocks.begin() + static_cast<std::ptrdiff_t>(i));
        cache.bytes -= body;
        return base;
      }
    }
  }
  const size_t span = body + kHugePage;  // room to slide the block to a 2 MiB boundary
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t first = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t begin = (first + kHugePage - 1) & ~(uintptr_t{kHugePage} - 1);
  const size_t head = begin - first, tail = span - head - body;
  if (head > 0) munmap(raw, head);
  if (tail > 0) munmap(reinterpret_cast<void*>(begin + body), tail);
  madvise(reinterpret_cast<void*>(begin), body, MADV_HUGEPAGE);  // a hint: the mapping is valid without it
  return reinterpret_cast<void*>(begin);
}

struct MappedOutputAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    const size_t body = (std::max<size_t>(n, 1) + kHugePage - 1) & ~(kHugePage - 1);
    void* data = map_huge_page_block(body);
    if (data == nullptr) return c10::GetCPUAllocator()->allocate(n);  // torch reports a real failure
    return {data, new MappedOutput{data, body}, &release_mapped_output, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

inline c10::Allocator* mapped_output_allocator() {
  static MappedOutputAllocator allocator;
  return &allocator;
}
#endif

// An output of the op in `layout` (a [T, *] tensor if `seq`, else one step [*]).
inline at::Tensor empty_output(at::IntArrayRef sizes, const StepLayout& layout, bool seq,
                               const at::TensorOptions& options) {
  const std::vector<int64_t> strides = layout.strides(sizes, seq);
#if defined(TKS_LIF_MAPPED_OUTPUTS)
  if (options.device().is_cpu()) {
    const size_t bytes = static_cast<size_t>(c10::multiply_integers(sizes)) * options.dtype().itemsize();
    if (bytes >= kMinMappedOutputBytes) {
      const c10::DispatchKeySet keys(c10::DispatchKey::CPU);
      const at::ScalarType dtype = c10::typeMetaToScalarType(options.dtype());
      if (strides.empty()) {
        return at::detail::empty_generic(sizes, mapped_output_allocator(), keys, dtype, std::nullopt);
      }
      return at::detail::empty_strided_generic(sizes, strides, mapped_output_allocator(), keys, dtype);
    }
  }
#endif
  at::Tensor t = strides.empty() ? at::empty(sizes, options) : at::empty_strided(sizes, strides, options);
  if (t.is_cpu() && t.nbytes() >= (size_t{4} << 20)) advise_huge_pages(t.data_ptr(), t.nbytes());
  return t;
}

template <typename T>
inline const T* ptr_or_null(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// tks::lif_forward: checks, allocates, fills the kernel arguments and calls
// launch(dtype, params, args). Returns (spikes, v, h); h is empty [0] when save_h is false.
template <typename Launch>
TensorTriple lif_forward_impl(c10::DeviceType kernel, const at::Tensor& x_seq, const std::optional<at::Tensor>& v_init,
                              const std::optional<at::Tensor>& decay, int64_t leak, double tau, bool decay_input,
                              double v_threshold, double v_reset, bool soft_reset, bool detach_reset,
                              int64_t surrogate, double alpha, bool store_v_seq, bool save_h, int64_t max_spike_count,
                              double grad_min, double grad_max, bool count_lif_charge, Launch launch) {
  const char* op = "tks::lif_forward";
  const at::Device device = x_seq.device();
  check_device(op, "x_seq", x_seq, device, kernel);
  const DType dtype = check_io_dtype(op, "x_seq", x_seq.scalar_type());
  TORCH_CHECK(x_seq.dim() >= 1 && x_seq.size(0) >= 1, op, ": x_seq must have shape [T, *] with T >= 1, got ",
              x_seq.sizes());
  const LIFParams p = make_params(leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset, surrogate,
                                  alpha, store_v_seq, max_spike_count, grad_min, grad_max, count_lif_charge);
  const at::IntArrayRef step_shape = x_seq.sizes().slice(1);
  const StepLayout layout = step_layout(x_seq);
  const auto v0 = state_fp32(op, "v_init", v_init, step_shape, layout, device, kernel);
  const auto k = scalar_fp32(op, "decay", decay, device, kernel);
  TORCH_CHECK(leak != kLeakMul || k.has_value(), op, ": leak=2 (decay tensor) needs decay");

  const Rows rows = as_rows(x_seq, layout);
  const auto f32 = x_seq.options().dtype(at::kFloat);
  at::Tensor spikes = empty_output(x_seq.sizes(), layout, true, x_seq.options());
  at::Tensor v_out = empty_output(store_v_seq ? x_seq.sizes() : step_shape, layout, store_v_seq, f32);
  at::Tensor h = save_h ? empty_output(x_seq.sizes(), layout, true, f32) : at::empty({0}, f32);

  LIFForwardArgs a;
  a.x = rows.x.data_ptr();
  a.v_init = ptr_or_null<float>(v0);
  a.decay = leak == kLeakMul ? k->data_ptr<float>() : nullptr;
  a.spikes = spikes.data_ptr();
  a.v_out = v_out.data_ptr<float>();
  a.h = save_h ? h.data_ptr<float>() : nullptr;
  a.T = rows.T;
  a.N = rows.N;
  a.x_stride_t = rows.stride_t;
  if (a.N > 0) launch(dtype, p, a);
  return {spikes, v_out, h};
}

// tks::lif_backward: returns (grad_x [T, *] in x_dtype, grad_v_init [*] fp32, grad_decay 0-dim fp32,
// zero unless need_grad_decay). launch(dtype, params, args) fills them. With recompute, h is
// ignored (the forward wrote none): x_seq gives the shape and the layout (the forward's, from the
// same rule), and the kernels re-run the recurrence from x_seq and v_init (args.h == nullptr).
template <typename Launch>
TensorTriple lif_backward_impl(c10::DeviceType kernel, const std::optional<at::Tensor>& grad_spikes,
                               const std::optional<at::Tensor>& grad_v, const at::Tensor& h,
                               const std::optional<at::Tensor>& x_seq, const std::optional<at::Tensor>& v_init,
                               const std::optional<at::Tensor>& decay, int64_t leak, double tau, bool decay_input,
                               double v_threshold, double v_reset, bool soft_reset, bool detach_reset,
                               int64_t surrogate, double alpha, bool store_v_seq, at::ScalarType x_dtype,
                               bool need_grad_decay, int64_t max_spike_count, double grad_min, double grad_max,
                               bool count_lif_charge, bool recompute, Launch launch) {
  const char* op = "tks::lif_backward";
  if (recompute) {
    TORCH_CHECK(x_seq.has_value(), op, ": recompute=True needs x_seq (H is recomputed from it)");
    TORCH_CHECK(x_seq->dim() >= 1 && x_seq->size(0) >= 1, op, ": x_seq must have shape [T, *] with T >= 1, got ",
                x_seq->sizes());
  }
  const at::Tensor& like = recompute ? *x_seq : h;  // the [T, *] tensor that places and shapes the op
  const at::Device device = like.device();
  check_device(op, recompute ? "x_seq" : "h", like, device, kernel);
  if (!recompute) {
    TORCH_CHECK(h.scalar_type() == at::kFloat, op, ": h must be float32 (the saved charge), got ", h.scalar_type());
    TORCH_CHECK(h.dim() >= 1 && h.size(0) >= 1, op, ": h must have shape [T, *] with T >= 1, got ", h.sizes(),
                " (was the forward called with save_h=False?)");
  }
  const DType dtype = check_io_dtype(op, "x_dtype", x_dtype);
  const LIFParams p = make_params(leak, tau, decay_input, v_threshold, v_reset, soft_reset, detach_reset, surrogate,
                                  alpha, store_v_seq, max_spike_count, grad_min, grad_max, count_lif_charge);
  const at::IntArrayRef seq_shape = like.sizes();
  const at::IntArrayRef step_shape = seq_shape.slice(1);
  // the forward wrote its outputs (and h) in this layout; the gradients (and x, v_init) are brought to it
  const StepLayout layout = recompute ? step_layout(*x_seq) : saved_layout(h);
  at::Tensor h_c;
  if (!recompute) h_c = layout.permuted ? h : h.contiguous();

  std::optional<at::Tensor> gs;
  if (grad_spikes.has_value()) {
    check_device(op, "grad_spikes", *grad_spikes, device, kernel);
    check_float(op, "grad_spikes", *grad_spikes);
    TORCH_CHECK(grad_spikes->sizes() == seq_shape, op, ": grad_spikes has shape ", grad_spikes->sizes(),
                " but the spikes have shape ", seq_shape);
    gs = as_layout(*grad_spikes, layout, true, x_dtype);
  }
  std::optional<at::Tensor> gv;
  if (grad_v.has_value()) {
    check_device(op, "grad_v", *grad_v, device, kernel);
    check_float(op, "grad_v", *grad_v);
    TORCH_CHECK(grad_v->sizes() == (store_v_seq ? seq_shape : step_shape), op, ": grad_v has shape ",
                grad_v->sizes(), " but v has shape ", store_v_seq ? seq_shape : step_shape);
    gv = as_layout(*grad_v, layout, store_v_seq, at::kFloat);
  }
  const bool need_x = recompute || (need_grad_decay && decay_input);
  TORCH_CHECK(!need_grad_decay || leak == kLeakMul, op, ": need_grad_decay needs leak=2 (decay tensor)");
  std::optional<Rows> rows;
  if (need_x) {
    TORCH_CHECK(x_seq.has_value(), op, ": the leak's gradient with decay_input needs x_seq");
    check_device(op, "x_seq", *x_seq, device, kernel);
    TORCH_CHECK(x_seq->scalar_type() == x_dtype, op, ": x_seq has dtype ", x_seq->scalar_type(), " but x_dtype is ",
                x_dtype);
    TORCH_CHECK(x_seq->sizes() == seq_shape, op, ": x_seq has shape ", x_seq->sizes(), " but h has shape ",
                seq_shape);
    rows = as_rows(*x_seq, layout);
  }
  const auto v0 = need_grad_decay || recompute
                      ? state_fp32(op, "v_init", v_init, step_shape, layout, device, kernel)
                      : std::nullopt;
  const auto k = scalar_fp32(op, "decay", decay, device, kernel);
  TORCH_CHECK(leak != kLeakMul || k.has_value(), op, ": leak=2 (decay tensor) needs decay");

  const auto f32 = like.options().dtype(at::kFloat);
  at::Tensor grad_x = empty_output(seq_shape, layout, true, like.options().dtype(x_dtype));
  at::Tensor grad_v_init = empty_output(step_shape, layout, false, f32);
  const int64_t T = seq_shape[0], N = like.numel() / T;
  at::Tensor grad_decay = need_grad_decay && N > 0 ? at::empty({}, f32) : at::zeros({}, f32);

  LIFBackwardArgs a;
  a.grad_spikes = gs.has_value() ? gs->data_ptr() : nullptr;
  a.grad_v = ptr_or_null<float>(gv);
  a.h = recompute ? nullptr : h_c.data_ptr<float>();
  a.x = rows.has_value() ? rows->x.data_ptr() : nullptr;
  a.v_init = ptr_or_null<float>(v0);
  a.decay = leak == kLeakMul ? k->data_ptr<float>() : nullptr;
  a.grad_x = grad_x.data_ptr();
  a.grad_v_init = grad_v_init.data_ptr<float>();
  a.grad_decay = need_grad_decay ? grad_decay.data_ptr<float>() : nullptr;
  a.workspace = nullptr;
  a.T = T;
  a.N = N;
  a.x_stride_t = rows.has_value() ? rows->stride_t : N;
  if (N > 0) launch(dtype, p, a);
  return {grad_x, grad_v_init, grad_decay};
}

}  // namespace lif
}  // namespace tks
