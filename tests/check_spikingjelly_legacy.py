"""Manual check (not collected by pytest): tks.replace_neurons on real spikingjelly 0.0.0.0.14 models.

0.0.0.0.14 cannot be installed beside the 2.0.0 the tests use, so unpack it elsewhere and put it first:

    pip download --no-deps spikingjelly==0.0.0.0.14 -d /tmp/sj14dl
    python -m zipfile -e /tmp/sj14dl/spikingjelly-0.0.0.0.14-py3-none-any.whl /tmp/sj14
    PYTHONPATH=/tmp/sj14:.:python python tests/check_spikingjelly_legacy.py

It replaces the clock_driven single-step and MultiStep* LIF / IF / PLIF neurons (and 0.0.0.0.14's
activation_based ones) and prints whether spikes and gradients stay the same.
"""
import copy
import warnings

import torch
import torch.nn as nn
from spikingjelly.activation_based import neuron as an
from spikingjelly.clock_driven import functional as cf
from spikingjelly.clock_driven import layer as cl
from spikingjelly.clock_driven import neuron as cn
from spikingjelly.clock_driven import surrogate as cs

import tks


def check(net, x, multi_step):
    after = copy.deepcopy(net)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        n = tks.replace_neurons(after)
    outs, grads = [], []
    for model in (net, after):
        xx = x.clone().requires_grad_()
        out = model(xx) if multi_step else torch.stack([model(t) for t in xx])
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        outs.append(out.detach())
        grads.append([xx.grad] + [p.grad for p in model.parameters()])
        cf.reset_net(model)
    err = max(((a - b).norm() / b.norm()).item() for a, b in zip(*grads) if b is not None and b.norm() > 0)
    ok = n == 3 and not caught and torch.equal(outs[0], outs[1]) and err < 1e-5
    print(f"  replaced {n}, warnings {len(caught)}, spikes equal {torch.equal(outs[0], outs[1])}, "
          f"max grad rel err {err:.1e}: {'OK' if ok else 'FAIL'}")
    return ok


def main():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 8) * 1.5 + 0.3
    ok = True
    for decay_input in (True, False):
        for v_reset in (0.0, None, -0.2):
            print(f"decay_input={decay_input} v_reset={v_reset}: single step")
            net = nn.Sequential(
                nn.Linear(8, 8), cn.LIFNode(tau=2.5, decay_input=decay_input, v_reset=v_reset,
                                            surrogate_function=cs.ATan(alpha=3.0)),
                nn.Linear(8, 8), cn.IFNode(v_reset=v_reset),
                nn.Linear(8, 8), cn.ParametricLIFNode(decay_input=decay_input, v_reset=v_reset, detach_reset=True),
            )
            ok &= check(net, x, False)
            print("  multi step")
            net = nn.Sequential(
                cl.SeqToANNContainer(nn.Linear(8, 8)),
                cn.MultiStepLIFNode(tau=2.5, decay_input=decay_input, v_reset=v_reset,
                                    surrogate_function=cs.Sigmoid(alpha=3.0)),
                cl.SeqToANNContainer(nn.Linear(8, 8)), cn.MultiStepIFNode(v_reset=v_reset),
                cl.SeqToANNContainer(nn.Linear(8, 8)), cn.MultiStepParametricLIFNode(decay_input=decay_input, v_reset=v_reset),
            )
            ok &= check(net, x, True)
    print("0.0.0.0.14 activation_based")
    net = nn.Sequential(nn.Linear(8, 8), an.LIFNode(tau=2.5, step_mode="m", backend="torch"), nn.Linear(8, 8),
                        an.ParametricLIFNode(step_mode="m", v_reset=None), nn.Linear(8, 8), an.IFNode(step_mode="m"))
    ok &= check(net, x, True)
    print("ALL OK" if ok else "SOME FAILED")


if __name__ == "__main__":
    main()
