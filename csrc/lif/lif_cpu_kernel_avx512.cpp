// The C++ CPU LIF kernels compiled for AVX-512 (16 floats per instruction; chosen at run time by
// lif_cpu_kernel.cpp when the CPU has AVX-512 F/VL/BW/DQ). The sigmoid surrogate's exp makes the
// backward compute bound: 512-bit vectors halve its time on an EPYC (Zen 4) core. Every header is
// included before the target pragma, so only this file's own (internal) functions are AVX-512
// code: no inline function shared with other files can come out of here in an AVX-512 build. No
// FMA: -ffp-contract=off keeps the rounding of the reference either way.
#include "lif/lif_cpu.h"

#if TKS_LIF_CPU_X86
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#pragma GCC push_options
#pragma GCC target("avx2,avx512f,avx512vl,avx512bw,avx512dq,prefer-vector-width=512")
#define TKS_LIF_CPU_ISA avx512
#include "lif/lif_cpu_kernel_impl.h"
#undef TKS_LIF_CPU_ISA
#pragma GCC pop_options
#endif
