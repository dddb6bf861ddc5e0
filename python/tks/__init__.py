"""tks: the model layer over tks_kernels (neuron modules, losses, models, training)."""
