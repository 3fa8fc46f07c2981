"""SNGAN "standard CNN" generator and discriminator (Miyato et al. 2018, Table 3), generic over resolution.

With k = log2(resolution / 4) up/down-sampling stages:

- generator: ``g_ch`` channels at 4x4, halved by each of the k transposed convs, so the last feature map has
  ``g_ch // 2**k`` channels (paper, 32x32: g_ch=512 -> 256 -> 128 -> 64; at 64x64: 512 -> ... -> 32).
- discriminator: stage i (i = 0..k-1) is a 3x3 conv to ``d_ch * 2**i`` channels and a 4x4 stride-2 conv,
  then a last 3x3 conv to ``d_ch * 2**k`` and a Linear on the 4x4 map
  (paper, 32x32: d_ch=64 -> 64, 128, 256, 512; at 64x64: 64, 128, 256, 512, 1024).

Both are plain: spectral normalization is applied to D later, by walking its Conv/Linear modules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def num_stages(resolution: int) -> int:
    """Number of 2x up/down-sampling stages between 4x4 and ``resolution``."""
    return int(math.log2(resolution // 4))


def _xavier_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, gain=1.0)
            nn.init.zeros_(m.bias)


class _UpBlock(nn.Module):
    """4x4 stride-2 transposed conv -> BN -> ReLU (one row of Table 3's generator)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place is safe: BN's backward needs its input, not its output.
        return F.relu(self.bn(self.deconv(x)), inplace=True)


class CNNGenerator(nn.Module):
    """Table 3 generator: dense 4x4xg_ch -> BN -> ReLU -> k x (deconv, BN, ReLU) -> 3x3 conv -> tanh."""

    def __init__(self, resolution: int, z_dim: int = 128, g_ch: int = 512, channels: int = 3) -> None:
        super().__init__()
        k = num_stages(resolution)
        if g_ch >> k < 1:
            raise ValueError(
                f"model.g_ch must be >= {2**k} for the cnn generator at resolution {resolution} (it halves the "
                f"width {k} times), got {g_ch}"
            )
        self.z_dim, self.g_ch, self.resolution = z_dim, g_ch, resolution
        self.fc = nn.Linear(z_dim, 4 * 4 * g_ch)
        # BN over the dense output's 4*4*g_ch features, before the reshape, as in the authors' Chainer code.
        self.bn0 = nn.BatchNorm1d(4 * 4 * g_ch)
        self.blocks = nn.ModuleList(_UpBlock(g_ch >> i, g_ch >> (i + 1)) for i in range(k))
        self.out_conv = nn.Conv2d(g_ch >> k, channels, kernel_size=3, stride=1, padding=1)
        _xavier_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn0(self.fc(z)), inplace=True).view(z.shape[0], self.g_ch, 4, 4)
        for block in self.blocks:
            h = block(h)
        return torch.tanh(self.out_conv(h))


class CNNDiscriminator(nn.Module):
    """Table 3 discriminator: convs ``conv1 .. conv{2k+1}`` each followed by LeakyReLU(0.1), then ``fc`` -> logit.

    Layers are named attributes (not Sequential indices) so per-layer diagnostics read ``conv1``, ..., ``fc``.
    """

    def __init__(self, resolution: int, d_ch: int = 64, channels: int = 3) -> None:
        super().__init__()
        k = num_stages(resolution)
        self.d_ch, self.resolution = d_ch, resolution
        # (in, out, kernel, stride, padding) in forward order.
        specs: list[tuple[int, int, int, int, int]] = []
        in_ch = channels
        for i in range(k):
            width = d_ch * 2**i
            specs += [(in_ch, width, 3, 1, 1), (width, width, 4, 2, 1)]
            in_ch = width
        specs.append((in_ch, d_ch * 2**k, 3, 1, 1))
        self.conv_names = tuple(f"conv{j + 1}" for j in range(len(specs)))
        for name, (cin, cout, ks, stride, pad) in zip(self.conv_names, specs):
            self.add_module(name, nn.Conv2d(cin, cout, ks, stride, pad))
        self.fc = nn.Linear(4 * 4 * d_ch * 2**k, 1)
        _xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for name in self.conv_names:
            # Not in-place: forward hooks on the convs may keep their outputs for diagnostics.
            h = F.leaky_relu(getattr(self, name)(h), 0.1)
        return self.fc(h.flatten(1)).squeeze(1)
