"""tks: the model layer over tks_kernels (neuron modules, losses, models, training)."""
from .loss import KDLoss, MeanCELoss, TETLoss, TKSLoss
from .neuron import IFNode, ILIFNode, LIFNode, MultiBitLIFNode, ParametricLIFNode
from .replace import replace_neurons

__all__ = ["LIFNode", "IFNode", "ParametricLIFNode", "ILIFNode", "MultiBitLIFNode", "replace_neurons", "TKSLoss", "TETLoss", "MeanCELoss", "KDLoss"]
