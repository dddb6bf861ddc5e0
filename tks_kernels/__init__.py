"""tks-kernels: fused GPU kernels for spiking neural networks and the TKS loss."""
from .lif import SURROGATES, lif_multistep, lif_multistep_reference

__version__ = "0.1.0"
__all__ = ["lif_multistep", "lif_multistep_reference", "SURROGATES", "__version__"]
