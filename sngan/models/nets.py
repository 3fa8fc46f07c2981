"""The generator and discriminator for a model name, resolution and layout."""

from __future__ import annotations

from torch import nn

from sngan.models.cnn import INITS, CNNDiscriminator, CNNGenerator
from sngan.models.resnet import AUTHORS_RESOLUTIONS, UPSAMPLING, ResNetDiscriminator, ResNetGenerator

MODELS = ("cnn", "resnet")
LAYOUTS = ("paper_table", "authors")
RESOLUTIONS = (16, 32, 48, 64, 128)  # 4 * 2**k with k >= 2, and 48 = 6 * 2**3 (STL-10)
# What each layout implies unless set on its own: (LeakyReLU slope of the CNN's D, initialization).
LAYOUT_DEFAULTS = {("cnn", "paper_table"): (0.1, "xavier"), ("cnn", "authors"): (0.2, "normal"),
                   ("resnet", "paper_table"): (None, "xavier"), ("resnet", "authors"): (None, "xavier")}

__all__ = ["MODELS", "LAYOUTS", "RESOLUTIONS", "INITS", "UPSAMPLING", "build_generator", "build_discriminator"]


def _check(name: str, resolution: int, layout: str, init: str | None, **sizes: int) -> str:
    """Validate the common arguments; return the initialization to use."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    if isinstance(resolution, bool) or resolution not in RESOLUTIONS:
        raise ValueError(f"unsupported resolution {resolution!r}; allowed: {', '.join(map(str, RESOLUTIONS))} "
                         "(4*2**k with k>=2, or 48)")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    if name == "resnet" and layout == "authors" and resolution not in AUTHORS_RESOLUTIONS:
        raise ValueError(f"model.layout=authors: the authors' resnet layout exists at "
                         f"{', '.join(map(str, AUTHORS_RESOLUTIONS))} px, not {resolution}; use model.layout=paper_table")
    if init is not None and init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
    for key, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return init or LAYOUT_DEFAULTS[name, layout][1]


def build_generator(name: str, *, resolution: int, z_dim: int = 128, g_ch: int, channels: int = 3,
                    layout: str = "paper_table", init: str | None = None, upsample: str = "nearest") -> nn.Module:
    """Generator ``name`` mapping z of shape (N, z_dim) to tanh images (N, channels, resolution, resolution).

    ``init`` None: the layout's; ``upsample`` (resnet only): ``nearest`` or ``bilinear``."""
    init = _check(name, resolution, layout, init, z_dim=z_dim, g_ch=g_ch, channels=channels)
    if name == "cnn":
        if upsample != "nearest":
            raise ValueError(f"model.upsample={upsample} applies to the resnet generator only (the cnn uses "
                             "transposed convs); remove it (~model.upsample)")
        return CNNGenerator(int(resolution), z_dim=z_dim, g_ch=g_ch, channels=channels, init=init)
    if upsample not in UPSAMPLING:
        raise ValueError(f"unknown upsample {upsample!r}; choose one of: {', '.join(UPSAMPLING)}")
    return ResNetGenerator(int(resolution), z_dim=z_dim, g_ch=g_ch, channels=channels, upsample=upsample, init=init)


def build_discriminator(name: str, *, resolution: int, d_ch: int, channels: int = 3, layout: str = "paper_table",
                        init: str | None = None, leaky_slope: float | None = None) -> nn.Module:
    """Discriminator ``name`` mapping images (N, channels, resolution, resolution) to logits of shape (N,).

    ``init`` / ``leaky_slope`` None: the layout's (the slope applies to the cnn only: the resnet uses ReLU)."""
    init = _check(name, resolution, layout, init, d_ch=d_ch, channels=channels)
    if name == "resnet":
        if leaky_slope is not None:
            raise ValueError(f"model.leaky_slope={leaky_slope} applies to the cnn discriminator only (the resnet "
                             "uses ReLU); remove it (~model.leaky_slope)")
        return ResNetDiscriminator(int(resolution), d_ch=d_ch, channels=channels, layout=layout, init=init)
    slope = LAYOUT_DEFAULTS[name, layout][0] if leaky_slope is None else leaky_slope
    if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not 0 <= slope < 1:
        raise ValueError(f"leaky_slope must be a number in [0, 1), got {leaky_slope!r}")
    return CNNDiscriminator(int(resolution), d_ch=d_ch, channels=channels, layout=layout, leaky_slope=slope, init=init)
