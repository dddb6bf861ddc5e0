// The C++ CPU LIF kernels for the baseline instruction set, and the run-time choice between them
// and the AVX2 / AVX-512 builds (lif_cpu_kernel_avx2.cpp, lif_cpu_kernel_avx512.cpp): the widest the
// CPU has. TKS_CPU_ISA=generic|avx2 in the environment caps it (tests compare them bit for bit).
#include <cstdlib>
#include <cstring>

#include "lif/lif_cpu.h"

#define TKS_LIF_CPU_ISA generic
#include "lif/lif_cpu_kernel_impl.h"
#undef TKS_LIF_CPU_ISA

namespace tks {
namespace lif {

#if TKS_LIF_CPU_X86
namespace avx2 {
void forward(DType dtype, const LIFParams& p, const LIFForwardArgs& a);
void backward(DType dtype, const LIFParams& p, const LIFBackwardArgs& a);
}  // namespace avx2
namespace avx512 {
void forward(DType dtype, const LIFParams& p, const LIFForwardArgs& a);
void backward(DType dtype, const LIFParams& p, const LIFBackwardArgs& a);
}  // namespace avx512
#endif

namespace {

enum class Isa { kGeneric, kAvx2, kAvx512 };

Isa detect_isa() {
#if TKS_LIF_CPU_X86
  __builtin_cpu_init();
  Isa isa = Isa::kGeneric;
  if (__builtin_cpu_supports("avx2")) isa = Isa::kAvx2;
  if (isa == Isa::kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
    isa = Isa::kAvx512;
  }
  const char* cap = std::getenv("TKS_CPU_ISA");
  if (cap != nullptr && std::strcmp(cap, "generic") == 0) isa = Isa::kGeneric;
  if (cap != nullptr && std::strcmp(cap, "avx2") == 0 && isa == Isa::kAvx512) isa = Isa::kAvx2;
  return isa;
#else
  return Isa::kGeneric;
#endif
}

Isa isa() {
  static const Isa chosen = detect_isa();
  return chosen;
}

}  // namespace

const char* lif_cpu_isa() {
  switch (isa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "generic";
  }
}

void lif_forward_cpu(DType dtype, const LIFParams& p, const LIFForwardArgs& a) {
  if (a.N == 0) return;
#if TKS_LIF_CPU_X86
  if (isa() == Isa::kAvx512) return avx512::forward(dtype, p, a);
  if (isa() == Isa::kAvx2) return avx2::forward(dtype, p, a);
#endif
  generic::forward(dtype, p, a);
}

void lif_backward_cpu(DType dtype, const LIFParams& p, const LIFBackwardArgs& a) {
  if (a.N == 0) return;
#if TKS_LIF_CPU_X86
  if (isa() == Isa::kAvx512) return avx512::backward(dtype, p, a);
  if (isa() == Isa::kAvx2) return avx2::backward(dtype, p, a);
#endif
  generic::backward(dtype, p, a);
}

}  // namespace lif
}  // namespace tks
