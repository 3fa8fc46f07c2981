"""SNGAN "standard CNN" generator and discriminator (Miyato et al. 2018, Table 3), generic over resolution.

The maps start (G) or end (D) at ``bottom_width(resolution)``: 6x6 at 48 px (Table 3's STL-10 models,
M_g = 6), else 4x4; k = log2(resolution / bottom) up/down-sampling stages in between.

- generator: ``g_ch`` channels at the bottom, halved by each of the k transposed convs, so the last
  feature map has ``g_ch // 2**k`` channels (paper, 32x32: g_ch=512 -> 256 -> 128 -> 64; at 64x64: ... -> 32).
- discriminator, two layouts (``layout``):
  - ``paper_table`` (Table 3 as printed): stage i (i = 0..k-1) is a 3x3 conv to ``d_ch * 2**i`` channels
    and a 4x4 stride-2 conv that keeps the width, then a last 3x3 conv to ``d_ch * 2**k`` and a Linear on
    the bottom map (32x32, d_ch=64: 64, 64, 128, 128, 256, 256, 512: 2,935,873 parameters).
  - ``authors`` (``SNDCGANDiscriminator`` of the authors' Chainer code, pfnet-research/chainer-gan-lib
    common/net.py): each 4x4 stride-2 conv doubles the width, the last 3x3 conv keeps it
    (64, 128, 128, 256, 256, 512, 512: 5,860,865 parameters).
  Each conv is followed by LeakyReLU(``leaky_slope``): 0.1 in Table 3, 0.2 in the Chainer code
  (chainer.functions.leaky_relu's default).

Initialization (``init``): ``xavier`` (xavier_uniform_, gain 1) or ``normal`` (N(0, 0.02), the Chainer
code's ``initializers.Normal(0.02)``); biases zero. Both models are plain: spectral normalization is
applied to D later, by walking its Conv/Linear modules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INITS = ("xavier", "normal")
NORMAL_STD = 0.02  # chainer.initializers.Normal(0.02) in the authors' code


def bottom_width(resolution: int) -> int:
    """Side of the smallest feature map: 6 at 48 px (Table 3/5's STL-10 models), else 4."""
    return 6 if resolution == 48 else 4


def num_stages(resolution: int) -> int:
    """Number of 2x up/down-sampling stages between the bottom map and ``resolution``."""
    return int(math.log2(resolution // bottom_width(resolution)))


def init_weights(model: nn.Module, init: str) -> None:
    """Re-initialize every Conv/ConvTranspose/Linear weight of `model` (biases to zero)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init == "xavier":
                nn.init.xavier_uniform_(m.weight, gain=1.0)
            else:
                nn.init.normal_(m.weight, 0.0, NORMAL_STD)
            if m.bias is not None:
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
    """Table 3 generator: dense bxbxg_ch -> BN -> ReLU -> k x (deconv, BN, ReLU) -> 3x3 conv -> tanh.

    The same in both layouts (the Chainer ``DCGANGenerator`` has these layers); ``init`` differs.
    """

    def __init__(self, resolution: int, z_dim: int = 128, g_ch: int = 512, channels: int = 3,
                 init: str = "xavier") -> None:
        super().__init__()
        k = num_stages(resolution)
        if g_ch >> k < 1:
            raise ValueError(
                f"model.g_ch must be >= {2**k} for the cnn generator at resolution {resolution} (it halves the "
                f"width {k} times), got {g_ch}"
            )
        self.z_dim, self.g_ch, self.resolution = z_dim, g_ch, resolution
        self.bottom = bottom_width(resolution)
        self.fc = nn.Linear(z_dim, self.bottom * self.bottom * g_ch)
        # BN over the dense output's b*b*g_ch features, before the reshape, as in the authors' Chainer code.
        self.bn0 = nn.BatchNorm1d(self.bottom * self.bottom * g_ch)
        self.blocks = nn.ModuleList(_UpBlock(g_ch >> i, g_ch >> (i + 1)) for i in range(k))
        self.out_conv = nn.Conv2d(g_ch >> k, channels, kernel_size=3, stride=1, padding=1)
        init_weights(self, init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn0(self.fc(z)), inplace=True).view(z.shape[0], self.g_ch, self.bottom, self.bottom)
        for block in self.blocks:
            h = block(h)
        return torch.tanh(self.out_conv(h))


def discriminator_convs(layout: str, resolution: int, d_ch: int, channels: int) -> list[tuple[int, int, int, int, int]]:
    """(in, out, kernel, stride, padding) of the CNN discriminator's convs, in forward order."""
    specs: list[tuple[int, int, int, int, int]] = []
    in_ch = channels
    for i in range(num_stages(resolution)):
        width = d_ch * 2**i
        out = 2 * width if layout == "authors" else width  # the authors' stride-2 convs double the width
        specs += [(in_ch, width, 3, 1, 1), (width, out, 4, 2, 1)]
        in_ch = out
    specs.append((in_ch, d_ch * 2 ** num_stages(resolution), 3, 1, 1))
    return specs


class CNNDiscriminator(nn.Module):
    """Convs ``conv1 .. conv{2k+1}`` each followed by LeakyReLU(leaky_slope), then ``fc`` -> logit.

    Layers are named attributes (not Sequential indices) so per-layer diagnostics read ``conv1``, ..., ``fc``.
    """

    def __init__(self, resolution: int, d_ch: int = 64, channels: int = 3, layout: str = "paper_table",
                 leaky_slope: float = 0.1, init: str = "xavier") -> None:
        super().__init__()
        self.d_ch, self.resolution, self.layout, self.leaky_slope = d_ch, resolution, layout, float(leaky_slope)
        specs = discriminator_convs(layout, resolution, d_ch, channels)
        self.conv_names = tuple(f"conv{j + 1}" for j in range(len(specs)))
        for name, (cin, cout, ks, stride, pad) in zip(self.conv_names, specs):
            self.add_module(name, nn.Conv2d(cin, cout, ks, stride, pad))
        bottom = bottom_width(resolution)
        self.fc = nn.Linear(bottom * bottom * specs[-1][1], 1)
        init_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for name in self.conv_names:
            # Not in-place: forward hooks on the convs may keep their outputs for diagnostics.
            h = F.leaky_relu(getattr(self, name)(h), self.leaky_slope)
        return self.fc(h.flatten(1)).squeeze(1)
