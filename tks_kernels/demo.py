"""Run the fused LIF once and print how it agrees with the eager reference."""
import torch

import tks_kernels


def main() -> None:
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(8, 64, 1024, device=device, requires_grad=True)
    kwargs = dict(tau=2.0, v_threshold=0.5, surrogate="piecewise_quadratic", alpha=2.0)
    spikes, v = tks_kernels.lif_multistep(x, **kwargs)
    ref_spikes, ref_v = tks_kernels.lif_multistep(x, backend="torch", **kwargs)
    grad = torch.autograd.grad(spikes.sum() + v.sum(), x)[0]
    ref_grad = torch.autograd.grad(ref_spikes.sum() + ref_v.sum(), x)[0]
    print(f"device {device}, x {tuple(x.shape)}, firing rate {spikes.float().mean().item():.3f}")
    print(f"spikes equal to the reference: {bool(torch.equal(spikes, ref_spikes))}")
    print(f"v relative error: {((v - ref_v).norm() / ref_v.norm()).item():.2e}")
    print(f"grad relative error: {((grad - ref_grad).norm() / ref_grad.norm()).item():.2e}")


if __name__ == "__main__":
    main()
