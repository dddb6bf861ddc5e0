// The C++ CPU LIF kernels (lif_cpu_kernel.cpp). No torch headers: the torch binding (lif_cpu.cpp)
// checks the tensors, allocates, and passes raw pointers.
#pragma once

#include "lif/lif_kernel.h"

// AVX2 and AVX-512 builds of the kernels exist (GCC on x86-64); the CPU is asked at run time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TKS_LIF_CPU_X86 1
#else
#define TKS_LIF_CPU_X86 0
#endif

namespace tks {
namespace lif {

// Forward over all T; OpenMP across neurons.
void lif_forward_cpu(DType dtype, const LIFParams& p, const LIFForwardArgs& a);

// Backward over all T in reverse; with a.grad_decay, the leak's gradient is summed per neuron in
// fp64, then per chunk of neurons, then over chunks in order: the same bits whatever the thread count.
void lif_backward_cpu(DType dtype, const LIFParams& p, const LIFBackwardArgs& a);

// The instruction set the kernels run with: "avx512", "avx2" or "generic".
const char* lif_cpu_isa();

}  // namespace lif
}  // namespace tks
