// The C++ CPU LIF kernels compiled for AVX2 (8 floats per instruction; chosen at run time by
// lif_cpu_kernel.cpp when the CPU has it). Every header is included before the target pragma, so
// only this file's own (internal) functions are AVX2 code: no inline function shared with other
// files can come out of here in an AVX2 build. No FMA: -ffp-contract=off keeps the rounding of the
// reference either way.
#include "lif/lif_cpu.h"

#if TKS_LIF_CPU_X86
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#pragma GCC push_options
#pragma GCC target("avx2")
#define TKS_LIF_CPU_ISA avx2
#include "lif/lif_cpu_kernel_impl.h"
#undef TKS_LIF_CPU_ISA
#pragma GCC pop_options
#endif
