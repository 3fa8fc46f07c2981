"""SNGAN generators and discriminators (Miyato et al. 2018): ``cnn`` (Table 3) and ``resnet`` (Tables 4/5).

Two layouts (``layout``): ``paper_table`` (the default: the tables as printed, the models every
figure so far was measured with) and ``authors`` (the authors' released Chainer code: for the CNN,
chainer-gan-lib's ``SNDCGANDiscriminator`` widths, LeakyReLU 0.2 and N(0, 0.02) initialization; for
the ResNet, sngan_projection's models). The LeakyReLU slope and the initialization default to the
layout's and can be set on their own (``leaky_slope``, ``init``). cnn.py and resnet.py list the layers.

The models contain no spectral normalization; D's Conv/Linear layers have readable qualified names
(``conv1``, ``blocks.0.conv2``, ``fc``) so it can be applied, and diagnostics tagged, by walking them.
D returns logits of shape (N,); G maps z of shape (N, z_dim) to images in [-1, 1].
"""

from sngan.models.nets import (INITS, LAYOUTS, MODELS, RESOLUTIONS, UPSAMPLING, build_discriminator,
                               build_generator)


def __getattr__(name: str):
    """build_models, load_weights, restore_models (sngan/models/build.py), imported on first use:
    sngan.config reads this package's names while it loads, and build.py reads sngan.config."""
    if name in ("build_models", "load_weights", "restore_models"):
        from sngan.models import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["MODELS", "LAYOUTS", "RESOLUTIONS", "INITS", "UPSAMPLING", "build_generator", "build_discriminator",
           "build_models", "load_weights", "restore_models"]
