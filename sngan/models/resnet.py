"""SNGAN ResNet generator and discriminator (Miyato et al. 2018, Appendix B).

32x32 is exactly the CIFAR-10 model of Table 4 (paper widths g_ch=256, d_ch=128):

- G: Linear(z_dim, 4*4*g_ch) -> 3 up-ResBlocks of width g_ch -> BN -> ReLU -> 3x3 conv -> tanh.
- D: optimized down-block to d_ch, down-block d_ch, two plain blocks d_ch (ends at 8x8), ReLU,
  global sum pooling, Linear(d_ch, 1).

Every other resolution uses one generic layout, with k = log2(resolution / 4):

- G (as kwotsin/mimicry's SNGAN-64 generator): ``g_ch`` channels at 4x4, k up-blocks each halving the width,
  so the last block has ``g_ch // 2**k`` channels. 64x64 with g_ch=512: 512 -> 256 -> 128 -> 64 -> 32
  (mimicry's 64x64 model is g_ch=1024). At 128x128 this ends at g_ch // 32, unlike Table 5, whose first
  up-block keeps the width.
- D (the pattern of Table 5): optimized down-block to ``d_ch``, then k-1 down-blocks doubling the width until
  the map is 4x4, one plain block at that width, ReLU, sum pooling, Linear(d_ch * 2**(k-1), 1).
  64x64 with d_ch=64: 64, 128, 256, 512, 512; 128x128 with d_ch=64 is Table 5's D exactly.
  (mimicry's 64x64 D instead downsamples once more, to 2x2, with no plain block.)

Blocks follow the authors' Chainer code: nearest-neighbour upsampling in G, D blocks' first conv keeps the
input width, G blocks' first conv goes straight to the output width. Init as in mimicry: xavier_uniform_ with
gain sqrt(2) on residual-branch convs, 1 on 1x1 shortcut convs and the first/last layers; biases zero.
No BN in D; spectral normalization is applied to D later, by walking its Conv/Linear modules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sngan.models.cnn import num_stages


def _init(conv: nn.Conv2d | nn.Linear, gain: float) -> None:
    nn.init.xavier_uniform_(conv.weight, gain=gain)
    nn.init.zeros_(conv.bias)


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class GBlock(nn.Module):
    """Up-ResBlock: BN-ReLU-up-conv3x3-BN-ReLU-conv3x3, shortcut up-conv1x1."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, 1, 0)
        _init(self.conv1, math.sqrt(2))
        _init(self.conv2, math.sqrt(2))
        _init(self.shortcut, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place ReLU only right after BN, whose backward doesn't need its output; x itself is untouched.
        h = self.conv1(_up(F.relu(self.bn1(x), inplace=True)))
        h = self.conv2(F.relu(self.bn2(h), inplace=True))
        return h + self.shortcut(_up(x))


class DBlock(nn.Module):
    """ResBlock: ReLU-conv3x3-ReLU-conv3x3(-avgpool); shortcut conv1x1(-avgpool) if it downsamples or widens."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_ch, in_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        _init(self.conv1, math.sqrt(2))
        _init(self.conv2, math.sqrt(2))
        self.shortcut: nn.Conv2d | None = None
        if downsample or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, 1, 0)
            _init(self.shortcut, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not in-place: x feeds the shortcut too, and hooks on the convs may keep their outputs.
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        s = x if self.shortcut is None else self.shortcut(x)
        if self.downsample:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class OptimizedDBlock(nn.Module):
    """First D block: conv3x3-ReLU-conv3x3-avgpool; shortcut avgpool-conv1x1 (no ReLU on the raw image)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, 1, 0)
        _init(self.conv1, math.sqrt(2))
        _init(self.conv2, math.sqrt(2))
        _init(self.shortcut, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(x))), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))


class ResNetGenerator(nn.Module):
    """Table 4 generator at 32x32; widths halve per up-block at other resolutions (see module docstring)."""

    def __init__(self, resolution: int, z_dim: int = 128, g_ch: int = 256, channels: int = 3) -> None:
        super().__init__()
        k = num_stages(resolution)
        widths = [g_ch] * (k + 1) if resolution == 32 else [g_ch >> i for i in range(k + 1)]
        if widths[-1] < 1:
            raise ValueError(
                f"model.g_ch must be >= {2**k} for the resnet generator at resolution {resolution} (it halves "
                f"the width {k} times), got {g_ch}"
            )
        self.z_dim, self.g_ch, self.resolution = z_dim, g_ch, resolution
        self.fc = nn.Linear(z_dim, 4 * 4 * g_ch)
        self.blocks = nn.ModuleList(GBlock(cin, cout) for cin, cout in zip(widths, widths[1:]))
        self.bn = nn.BatchNorm2d(widths[-1])
        self.out_conv = nn.Conv2d(widths[-1], channels, 3, 1, 1)
        _init(self.fc, 1.0)
        _init(self.out_conv, 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self.g_ch, 4, 4)
        for block in self.blocks:
            h = block(h)
        return torch.tanh(self.out_conv(F.relu(self.bn(h), inplace=True)))


class ResNetDiscriminator(nn.Module):
    """Table 4 discriminator at 32x32; Table 5 pattern at other resolutions (see module docstring).

    Layer names: ``blocks.<i>.conv1``, ``blocks.<i>.conv2``, ``blocks.<i>.shortcut`` (1x1), ``fc``.
    """

    def __init__(self, resolution: int, d_ch: int = 128, channels: int = 3) -> None:
        super().__init__()
        k = num_stages(resolution)
        self.d_ch, self.resolution = d_ch, resolution
        blocks: list[nn.Module] = [OptimizedDBlock(channels, d_ch)]
        if resolution == 32:
            blocks += [DBlock(d_ch, d_ch, downsample=True), DBlock(d_ch, d_ch, False), DBlock(d_ch, d_ch, False)]
            width = d_ch
        else:
            widths = [d_ch * 2**i for i in range(k)]
            blocks += [DBlock(cin, cout, downsample=True) for cin, cout in zip(widths, widths[1:])]
            width = widths[-1]
            blocks.append(DBlock(width, width, downsample=False))
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(width, 1)
        _init(self.fc, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for block in self.blocks:
            h = block(h)
        # Global sum (not mean) pooling, as in the paper.
        return self.fc(F.relu(h).sum(dim=(2, 3))).squeeze(1)
