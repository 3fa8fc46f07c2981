"""GAN losses on discriminator logits: hinge (SNGAN's default) and non-saturating (bce)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

LOSSES = ("hinge", "bce")


def d_loss(name: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator loss: real pushed up, fake pushed down."""
    if name == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    if name == "bce":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


def g_loss(name: str, fake_logits: Tensor) -> Tensor:
    """Generator loss: hinge uses -D(G(z)); bce the non-saturating -log sigmoid(D(G(z)))."""
    if name == "hinge":
        return -fake_logits.mean()
    if name == "bce":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
