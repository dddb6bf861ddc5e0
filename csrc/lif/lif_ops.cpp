// Schemas of the LIF ops (namespace tks). Built into tks_kernels._C, which is always loaded before
// tks_kernels._C_cuda; the kernels register for CPU (lif_cpu.cpp) and CUDA (lif_cuda.cpp); the fake
// (meta) implementations and the autograd formula are registered in Python, in the module named below.
//
// Arguments after the tensors are LIFConfig's fields (tks_kernels/lif/config.py): leak 0/1/2 =
// IF / float tau / decay tensor; v_reset is V_r (0 for soft reset); surrogate is an id of SURROGATES;
// max_spike_count 0 = binary spikes, D >= 1 = integer counts (I-LIF) with the gradient window
// [grad_min, grad_max] on H / v_threshold (soft reset, no decay_input; surrogate and alpha unused),
// charged as (1 - 1/tau) V + X, or with count_lif_charge as the LIF, V - V/tau + X.
// save_x (forward) tells the autograd formula to keep x_seq and v_init instead of h (the kernels
// ignore it: the caller passes save_h=False with it); recompute (backward) takes h empty and
// re-runs the forward's recurrence from x_seq and v_init (lif_multistep's save="x").
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(tks, m) {
  m.set_python_module("tks_kernels.lif.extension");
  // (spikes [T, *] in x's dtype, v fp32 [T, *] or [*], h fp32 [T, *] saved for backward or [0])
  m.def(
      "lif_forward(Tensor x_seq, Tensor? v_init, Tensor? decay, int leak, float tau, bool decay_input, "
      "float v_threshold, float v_reset, bool soft_reset, bool detach_reset, int surrogate, float alpha, "
      "bool store_v_seq, bool save_h, int max_spike_count=0, float grad_min=0., float grad_max=0., "
      "bool count_lif_charge=False, bool save_x=False) "
      "-> (Tensor, Tensor, Tensor)");
  // (grad_x [T, *] in x_dtype, grad_v_init fp32 [*], grad_decay fp32 0-dim, zero unless need_grad_decay)
  m.def(
      "lif_backward(Tensor? grad_spikes, Tensor? grad_v, Tensor h, Tensor? x_seq, Tensor? v_init, Tensor? decay, "
      "int leak, float tau, bool decay_input, float v_threshold, float v_reset, bool soft_reset, "
      "bool detach_reset, int surrogate, float alpha, bool store_v_seq, ScalarType x_dtype, "
      "bool need_grad_decay, int max_spike_count=0, float grad_min=0., float grad_max=0., "
      "bool count_lif_charge=False, bool recompute=False) "
      "-> (Tensor, Tensor, Tensor)");
}
