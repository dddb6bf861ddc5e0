"""tks: the model layer over tks_kernels (neuron modules, losses, models, training)."""
from .loss import KDLoss, MeanCELoss, TETLoss, TKSLoss
from .neuron import IFNode, LIFNode, ParametricLIFNode
from .replace import replace_neurons

__all__ = ["LIFNode", "IFNode", "ParametricLIFNode", "replace_neurons", "TKSLoss", "TETLoss", "MeanCELoss", "KDLoss"]
