"""SNGAN generators and discriminators (Miyato et al. 2018): ``cnn`` (Table 3) and ``resnet`` (Tables 4/5).

The models contain no spectral normalization; D's Conv/Linear layers have readable qualified names
(``conv1``, ``blocks.0.conv2``, ``fc``) so it can be applied, and diagnostics tagged, by walking them.
D returns logits of shape (N,); G maps z of shape (N, z_dim) to images in [-1, 1].
"""

from __future__ import annotations

from torch import nn

from sngan.models.cnn import CNNDiscriminator, CNNGenerator
from sngan.models.resnet import ResNetDiscriminator, ResNetGenerator

MODELS = ("cnn", "resnet")
RESOLUTIONS = (16, 32, 64, 128)  # 4 * 2**k with k >= 2

_GENERATORS = {"cnn": CNNGenerator, "resnet": ResNetGenerator}
_DISCRIMINATORS = {"cnn": CNNDiscriminator, "resnet": ResNetDiscriminator}

__all__ = ["MODELS", "RESOLUTIONS", "build_generator", "build_discriminator"]


def _check(name: str, resolution: int, **sizes: int) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    if isinstance(resolution, bool) or resolution not in RESOLUTIONS:
        raise ValueError(
            f"unsupported resolution {resolution!r}; allowed: {', '.join(map(str, RESOLUTIONS))} (4*2**k, k>=2)"
        )
    for key, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


def build_generator(name: str, *, resolution: int, z_dim: int = 128, g_ch: int, channels: int = 3) -> nn.Module:
    """Generator ``name`` mapping z of shape (N, z_dim) to tanh images (N, channels, resolution, resolution)."""
    _check(name, resolution, z_dim=z_dim, g_ch=g_ch, channels=channels)
    return _GENERATORS[name](int(resolution), z_dim=z_dim, g_ch=g_ch, channels=channels)


def build_discriminator(name: str, *, resolution: int, d_ch: int, channels: int = 3) -> nn.Module:
    """Discriminator ``name`` mapping images (N, channels, resolution, resolution) to logits of shape (N,)."""
    _check(name, resolution, d_ch=d_ch, channels=channels)
    return _DISCRIMINATORS[name](int(resolution), d_ch=d_ch, channels=channels)
