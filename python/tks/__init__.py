"""tks: the model layer over tks_kernels (neuron modules, losses, models, training)."""
from .neuron import IFNode, LIFNode, ParametricLIFNode

__all__ = ["LIFNode", "IFNode", "ParametricLIFNode"]
