"""Compile the package's Triton kernels ahead of time for a GPU architecture, without a GPU.

Run by tests/test_triton_aot.py in a fresh interpreter with TRITON_INTERPRET unset: the tests
otherwise run the kernels through the interpreter, which never compiles the GPU code path (the
libdevice exp / log of the TKS loss, for one). triton.compile lowers each kernel to PTX and runs
the ptxas bundled with triton; it needs no driver. Prints one JSON object per kernel variant:
its name, the PTX instruction counts the tests check, and the compiled kernel's shared memory.

    python tests/_triton_aot.py [capability, e.g. 90]
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from tks_kernels.lif import triton as lif_triton  # noqa: E402
from tks_kernels.lif.surrogate import SURROGATES  # noqa: E402
from tks_kernels.tks_loss import triton as loss_triton  # noqa: E402
from tks_kernels.kd_loss import triton as kd_triton  # noqa: E402

F32, I64, BF16 = "*fp32", "*i64", "*bf16"


def compile_variant(name, fn, signature, constexprs, options, capability):
    """Compile one specialisation; report what the tests check in its PTX."""
    signature = {**signature, **{k: "constexpr" for k in constexprs}}
    kernel = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                            target=GPUTarget("cuda", capability, 32), options=options)
    ptx = kernel.asm["ptx"]
    counts = {op: ptx.count(op) for op in ("fma.rn.f32", "div.rn.f32", "div.full.f32", "div.approx.f32",
                                           "lg2.approx", "ex2.approx")}
    # the spike count's rounding: + 2^23, then + -2^23 (tests/test_triton_aot.py)
    counts["round_2_23"] = min(ptx.count("0f4B000000;"), ptx.count("0fCB000000;"))
    return {"name": name, "ptx": counts, "cubin_bytes": len(kernel.asm.get("cubin", b""))}


def lif_variants(capability):
    opts = dict(num_warps=lif_triton.NUM_WARPS, **lif_triton.COMPILE_OPTIONS)
    fwd_sig = dict(x_ptr=F32, v_init_ptr=F32, decay_ptr=F32, spike_ptr=F32, v_ptr=F32, h_ptr=F32,
                   T="i32", N="i64", stride_xt="i64", tau="fp32", v_threshold="fp32", v_r="fp32", count="fp32",
                   count_decay="fp32")
    for leak in (0, 1, 2):
        yield compile_variant(
            f"lif_forward leak={leak}", lif_triton._lif_forward_kernel, fwd_sig,
            dict(HAS_V_INIT=True, LEAK=leak, DECAY_INPUT=True, SOFT_RESET=False, STORE_V_SEQ=False, SAVE_H=True,
                 COUNT=False, LIF_CHARGE=False, BLOCK=lif_triton.BLOCK, NUM_STAGES=lif_triton.NUM_STAGES), opts, capability)
    for leak in (1, 2):  # integer spike counts (I-LIF); the LIF charge with the float tau
        yield compile_variant(
            f"lif_forward count leak={leak}", lif_triton._lif_forward_kernel, fwd_sig,
            dict(HAS_V_INIT=True, LEAK=leak, DECAY_INPUT=False, SOFT_RESET=True, STORE_V_SEQ=False, SAVE_H=True,
                 COUNT=True, LIF_CHARGE=leak == 1, BLOCK=lif_triton.BLOCK, NUM_STAGES=lif_triton.NUM_STAGES), opts,
            capability)
    bwd_sig = dict(grad_spike_ptr=F32, grad_v_ptr=F32, h_ptr=F32, x_ptr=F32, v_init_ptr=F32, decay_ptr=F32,
                   grad_x_ptr=F32, grad_v_init_ptr=F32, grad_decay_partial_ptr="*fp64",
                   T="i32", N="i64", stride_xt="i64", last_row="i64", last_x_row="i64",
                   tau="fp32", v_threshold="fp32", v_r="fp32", alpha="fp32", count="fp32", count_decay="fp32",
                   grad_min="fp32", grad_max="fp32")
    for surrogate, (sid, _) in SURROGATES.items():
        leak = 2 if surrogate == "sigmoid" else 1  # one learnable leak: the fp64 in-launch reduction
        yield compile_variant(
            f"lif_backward surrogate={surrogate} leak={leak}", lif_triton._lif_backward_kernel, bwd_sig,
            dict(HAS_GRAD_SPIKE=True, HAS_GRAD_V=True, HAS_V_INIT=True, LEAK=leak, DECAY_INPUT=True,
                 SOFT_RESET=False, DETACH_RESET=False, SURROGATE=sid, STORE_V_SEQ=False, GRAD_DECAY=leak == 2,
                 COUNT=False, LIF_CHARGE=False, BLOCK=lif_triton.BLOCK, NUM_STAGES=lif_triton.NUM_STAGES), opts, capability)
    for leak in (1, 2):  # integer spike counts, the learnable leak's reduction with leak=2
        yield compile_variant(
            f"lif_backward count leak={leak}", lif_triton._lif_backward_kernel, bwd_sig,
            dict(HAS_GRAD_SPIKE=True, HAS_GRAD_V=True, HAS_V_INIT=True, LEAK=leak, DECAY_INPUT=False,
                 SOFT_RESET=True, DETACH_RESET=False, SURROGATE=0, STORE_V_SEQ=False, GRAD_DECAY=leak == 2,
                 COUNT=True, LIF_CHARGE=leak == 1, BLOCK=lif_triton.BLOCK, NUM_STAGES=lif_triton.NUM_STAGES), opts, capability)


def loss_variants(capability):
    fwd_sig = dict(logits_ptr=F32, target_ptr=I64, loss_ptr=F32, ce_ptr=F32, kd_ptr=F32, saved_ptr=F32,
                   T="i32", C="i32", stride_t="i64", stride_b="i64", lam="fp32", tau="fp32", kd_scale="fp32")
    bwd_sig = dict(logits_ptr=F32, target_ptr=I64, saved_ptr=F32,
                   grad_loss_ptr=F32, grad_ce_ptr=F32, grad_kd_ptr=F32, grad_logits_ptr=F32,
                   T="i32", C="i32", stride_t="i64", stride_b="i64", gstride_t="i64", gstride_b="i64",
                   stride_gloss="i64", stride_gce="i64", stride_gkd="i64", grad_div="fp32",
                   lam="fp32", tau="fp32", kd_scale="fp32")
    # (T, C): one class block, and several (the bench's T=10, C=1000)
    for T, C in ((4, 100), (10, 1000)):
        block_t, block_c = loss_triton._blocks(T, C, None)
        opts = dict(num_warps=loss_triton._num_warps(block_t, block_c), **loss_triton.COMPILE_OPTIONS)
        one_block = C <= block_c
        yield compile_variant(
            f"tks_loss_forward T={T} C={C}", loss_triton._tks_loss_forward_kernel, fwd_sig,
            dict(TEACHER_MEAN=T == 10, ONE_BLOCK=one_block, BLOCK_T=block_t, BLOCK_C=block_c), opts, capability)
        for detach in (False, True):
            yield compile_variant(
                f"tks_loss_backward T={T} C={C} detach={detach}", loss_triton._tks_loss_backward_kernel, bwd_sig,
                dict(HAS_GRAD_LOSS=True, HAS_GRAD_CE=True, HAS_GRAD_KD=True, DETACH_TEACHER=detach,
                     ONE_BLOCK=one_block, BLOCK_T=block_t, BLOCK_C=block_c), opts, capability)


def kd_variants(capability):
    from tks_kernels._softmax_triton import num_warps

    # C = 1000: one class block (of 1024); C = 3000: two blocks of 2048 and the saved-buffer re-read
    for C, logits in ((1000, F32), (3000, BF16)):
        block_c = kd_triton._block_c(C, None)
        opts = dict(num_warps=num_warps(block_c), **kd_triton.COMPILE_OPTIONS)
        fwd_sig = dict(student_ptr=logits, teacher_ptr=logits, loss_ptr=F32, saved_ptr=F32, TS="i32", TT="i32",
                       C="i32", s_stride_t="i64", s_stride_b="i64", t_stride_t="i64", t_stride_b="i64",
                       tau="fp32", tau_sq="fp32")
        yield compile_variant(f"kd_loss_forward C={C} {logits}", kd_triton._kd_loss_forward_kernel, fwd_sig,
                              dict(ONE_BLOCK=C <= block_c, BLOCK_C=block_c), opts, capability)
        bwd_sig = dict(saved_ptr=F32, grad_ptr=F32, grad_s_ptr=logits, grad_t_ptr=logits, TS="i32", TT="i32",
                       C="i32", grad_stride_t="i64", stride_grad="i64", grad_div="fp32", tau="fp32")
        for teacher_grad in (False, True):
            yield compile_variant(f"kd_loss_backward C={C} {logits} teacher_grad={teacher_grad}",
                                  kd_triton._kd_loss_backward_kernel, bwd_sig,
                                  dict(STUDENT_GRAD=True, TEACHER_GRAD=teacher_grad, BLOCK_C=block_c), opts, capability)


def main():
    capability = int(sys.argv[1]) if len(sys.argv) > 1 else 90
    for variant in (*lif_variants(capability), *loss_variants(capability), *kd_variants(capability)):
        print(json.dumps(variant), flush=True)


if __name__ == "__main__":
    main()
