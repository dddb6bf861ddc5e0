"""What importing and first calls cost: the compile machinery (torch._dynamo, ~1.5 s to import) is
loaded only by torch.compile, never by eager use or by tks-train --help."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_eager_use_does_not_import_the_compile_machinery():
    code = """
import sys, torch
import tks, tks_kernels
import tks.train, tks.eval  # the CLIs' modules (tks-train --help builds its parser from them)
tks.train.build_parser()
x = torch.randn(3, 2, 8, requires_grad=True)
spikes, v = tks_kernels.lif_multistep(x)
(spikes.sum() + v.sum()).backward()
node = tks.ParametricLIFNode(step_mode="m")
node(x).sum().backward()
logits = torch.randn(4, 5, 10, requires_grad=True)
tks_kernels.tks_loss(logits, torch.randint(0, 10, (5,)), lam=0.5).backward()
tks.TKSLoss(epochs=None)(logits, torch.randint(0, 10, (5,)))
loaded = sorted(m for m in sys.modules if m.startswith("torch._dynamo"))
assert not loaded, loaded
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "python")]))
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
