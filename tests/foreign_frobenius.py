"""A codebase whose forward pre-hook class is called SpectralNorm, like torch's legacy hook, but
normalizes something else: the weight's Frobenius norm."""

import torch
import torch.nn.functional as F
from torch import nn


class SpectralNorm:
    """Written in the legacy hook's shape (compute_weight, apply, weight_orig) and under its name;
    what it divides by is ||W||_F."""
    def __init__(self, name='weight'):
        self.name = name

    def compute_weight(self, module):
        weight = getattr(module, self.name + '_orig')
        return weight / weight.norm()

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module))

    @staticmethod
    def apply(module, name='weight'):
        fn = SpectralNorm(name)
        weight = module._parameters[name]
        del module._parameters[name]
        module.register_parameter(name + '_orig', weight)
        setattr(module, name, weight.data)
        module.register_forward_pre_hook(fn)
        return module


class FrobeniusDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = SpectralNorm.apply(nn.Conv2d(3, 8, 3, 1, 1))
        self.conv2 = SpectralNorm.apply(nn.Conv2d(8, 8, 3, 1, 1))
        self.fc = nn.Linear(8, 1)

    def forward(self, x):
        h = F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(x), 0.2)), 0.2)
        return self.fc(h.mean((2, 3)))
