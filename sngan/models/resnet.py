"""SNGAN ResNet generator and discriminator (Miyato et al. 2018, Appendix B), in two layouts.

Blocks follow the authors' Chainer code (pfnet-research/sngan_projection, gen_models/resblocks.py and
dis_models/resblocks.py): G blocks BN-ReLU-up-conv3x3-BN-ReLU-conv3x3 with an up-conv1x1 shortcut, the
first conv going straight to the output width; D blocks ReLU-conv3x3-ReLU-conv3x3(-avgpool) whose first
conv keeps the input width, with a conv1x1(-avgpool) shortcut when they downsample or widen; D ends with
ReLU, global sum pooling and a Linear. Widths per resolution (g_ch: G's width at the bottom map; d_ch:
the first D block's):

- 32 px, Table 4 (paper widths g_ch=256, d_ch=128): G 3 up-blocks at g_ch; D down d_ch, down d_ch,
  two plain blocks, Linear(d_ch, 1). ``authors`` is the same model (sngan_projection resnet_32 /
  snresnet_32) except that its final Linear has no bias (``nobias=True``).
- 48 px, Table 5 (g_ch=512, d_ch=64), both layouts: G from 6x6, 3 up-blocks halving the width; D down
  d_ch, 2d_ch, 4d_ch, 8d_ch (to 3x3), then a plain block widening to 16d_ch. There is no released code
  for it; Mimicry's sngan_48 is this table.
- 64 px, ``authors``: sngan_projection resnet_64 / snresnet_64, which Mimicry's sngan_64 copies
  (g_ch=1024, d_ch=64): G 4 up-blocks halving g_ch; D 5 down-blocks d_ch .. 16d_ch, ending at 2x2.
- 64 px ``paper_table``, and 16 and 128 px (``paper_table`` only; no reference), with k = log2(R / 4):
  G k up-blocks each halving g_ch (64 px, g_ch=512: 512 -> 256 -> 128 -> 64 -> 32); D down-blocks
  d_ch .. d_ch * 2**(k-1) to 4x4, then one plain block at that width (64 px: 64, 128, 256, 512, 512).

``upsample``: ``nearest`` (the Chainer code's unpooling) or ``bilinear`` (Mimicry's GBlock,
align_corners=False). ``init``: ``xavier`` (as the Chainer code and Mimicry: xavier_uniform_ with gain
sqrt(2) on residual-branch convs, 1 on shortcut convs and the first/last layers) or ``normal``
(N(0, 0.02) everywhere); biases zero. No BN in D; spectral normalization is applied to D later.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sngan.models.cnn import bottom_width, init_weights, num_stages

UPSAMPLING = ("nearest", "bilinear")
AUTHORS_RESOLUTIONS = (32, 48, 64)  # where the authors' (or the paper's) ResNet layout is defined


def _init(conv: nn.Conv2d | nn.Linear, gain: float) -> None:
    nn.init.xavier_uniform_(conv.weight, gain=gain)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _up(x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "bilinear":
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    return F.interpolate(x, scale_factor=2, mode="nearest")


def generator_widths(resolution: int, g_ch: int) -> list[int]:
    """Widths at the bottom map and after each up-block (the same in both layouts)."""
    k = num_stages(resolution)
    return [g_ch] * (k + 1) if resolution == 32 else [g_ch >> i for i in range(k + 1)]


def discriminator_blocks(layout: str, resolution: int, d_ch: int) -> list[tuple[int, int, bool]]:
    """(in, out, downsample) of the D blocks after the optimized first block (which maps to d_ch)."""
    k = num_stages(resolution)
    if resolution == 32:
        return [(d_ch, d_ch, True), (d_ch, d_ch, False), (d_ch, d_ch, False)]
    if resolution == 48:  # Table 5: down 64, 128, 256, 512 (48 -> 3), then a plain block to 1024
        return [(d_ch << i, d_ch << (i + 1), True) for i in range(3)] + [(8 * d_ch, 16 * d_ch, False)]
    if layout == "authors":  # snresnet_64: every block downsamples, ending at 2x2
        return [(d_ch << i, d_ch << (i + 1), True) for i in range(k)]
    widths = [d_ch * 2**i for i in range(k)]
    return [(cin, cout, True) for cin, cout in zip(widths, widths[1:])] + [(widths[-1], widths[-1], False)]


class GBlock(nn.Module):
    """Up-ResBlock: BN-ReLU-up-conv3x3-BN-ReLU-conv3x3, shortcut up-conv1x1."""

    def __init__(self, in_ch: int, out_ch: int, upsample: str = "nearest") -> None:
        super().__init__()
        self.upsample = upsample
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
        h = self.conv1(_up(F.relu(self.bn1(x), inplace=True), self.upsample))
        h = self.conv2(F.relu(self.bn2(h), inplace=True))
        return h + self.shortcut(_up(x, self.upsample))


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
    """Dense to the bottom map, up-blocks, BN, ReLU, 3x3 conv, tanh (widths: see the module docstring)."""

    def __init__(self, resolution: int, z_dim: int = 128, g_ch: int = 256, channels: int = 3,
                 upsample: str = "nearest", init: str = "xavier") -> None:
        super().__init__()
        k = num_stages(resolution)
        widths = generator_widths(resolution, g_ch)
        if widths[-1] < 1:
            raise ValueError(
                f"model.g_ch must be >= {2**k} for the resnet generator at resolution {resolution} (it halves "
                f"the width {k} times), got {g_ch}"
            )
        self.z_dim, self.g_ch, self.resolution = z_dim, g_ch, resolution
        self.bottom = bottom_width(resolution)
        self.fc = nn.Linear(z_dim, self.bottom * self.bottom * g_ch)
        self.blocks = nn.ModuleList(GBlock(cin, cout, upsample) for cin, cout in zip(widths, widths[1:]))
        self.bn = nn.BatchNorm2d(widths[-1])
        self.out_conv = nn.Conv2d(widths[-1], channels, 3, 1, 1)
        _init(self.fc, 1.0)
        _init(self.out_conv, 1.0)
        if init == "normal":
            init_weights(self, init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self.g_ch, self.bottom, self.bottom)
        for block in self.blocks:
            h = block(h)
        return torch.tanh(self.out_conv(F.relu(self.bn(h), inplace=True)))


class ResNetDiscriminator(nn.Module):
    """Optimized block, D blocks, ReLU, global sum pooling, Linear (widths: see the module docstring).

    Layer names: ``blocks.<i>.conv1``, ``blocks.<i>.conv2``, ``blocks.<i>.shortcut`` (1x1), ``fc``.
    """

    def __init__(self, resolution: int, d_ch: int = 128, channels: int = 3, layout: str = "paper_table",
                 init: str = "xavier") -> None:
        super().__init__()
        self.d_ch, self.resolution, self.layout = d_ch, resolution, layout
        plan = discriminator_blocks(layout, resolution, d_ch)
        blocks: list[nn.Module] = [OptimizedDBlock(channels, d_ch)]
        blocks += [DBlock(cin, cout, downsample) for cin, cout, downsample in plan]
        self.blocks = nn.ModuleList(blocks)
        # The authors' 32 px D (snresnet_32.py) has SNLinear(ch, 1, nobias=True); their other Linears have a bias.
        self.fc = nn.Linear(plan[-1][1], 1, bias=not (layout == "authors" and resolution == 32))
        _init(self.fc, 1.0)
        if init == "normal":
            init_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for block in self.blocks:
            h = block(h)
        # Global sum (not mean) pooling, as in the paper.
        return self.fc(F.relu(h).sum(dim=(2, 3))).squeeze(1)
