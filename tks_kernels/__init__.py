"""tks-kernels: fused GPU kernels for spiking neural networks, the TKS loss and the distillation loss."""
from .kd_loss import kd_loss, kd_loss_reference
from .lif import SURROGATES, lif_multistep, lif_multistep_reference
from .tks_loss import TKSLossParts, mean_ce, tet_loss, tks_lambda, tks_loss, tks_loss_reference

__version__ = "0.1.0"
__all__ = [
    "lif_multistep", "lif_multistep_reference", "SURROGATES",
    "tks_loss", "tks_loss_reference", "tks_lambda", "TKSLossParts", "tet_loss", "mean_ce",
    "kd_loss", "kd_loss_reference",
    "__version__",
]
