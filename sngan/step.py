"""One GAN training iteration: n_dis discriminator updates, then one generator update.

Shared by the trainer and the benchmark, so that what is timed is what trains. Nothing here reads
a value back to the host: the returned tensors are only read at log steps.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from sngan.losses import d_loss, g_loss


class Iteration(NamedTuple):
    loss_d: Tensor       # last D update's loss
    loss_g: Tensor
    real_logits: Tensor  # D's outputs in the last D update
    fake_logits: Tensor
    real: Tensor         # the images of the last D update, as D saw them
    fake: Tensor


def gan_iteration(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                  next_real: Callable[[], Tensor], *, batch_size: int, n_dis: int, loss: str,
                  instance_noise: float = 0.0) -> Iteration:
    device = next(G.parameters()).device
    for _ in range(n_dis):
        real = next_real()
        z = torch.randn(batch_size, G.z_dim, device=device)
        with torch.no_grad():
            fake = G(z)
        if instance_noise > 0:  # D sees noisy images: no perfect separation of exact data
            real = real + instance_noise * torch.randn_like(real)
            fake = fake + instance_noise * torch.randn_like(fake)
        # Each normalized weight is computed once per D update, not once per D call.
        with parametrize.cached():
            real_logits, fake_logits = D(real), D(fake)
            loss_d = d_loss(loss, real_logits, fake_logits)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
        opt_d.step()

    D.requires_grad_(False)  # G's update needs gradients through D, not for D
    z = torch.randn(batch_size, G.z_dim, device=device)
    fake_g = G(z)
    if instance_noise > 0:
        fake_g = fake_g + instance_noise * torch.randn_like(fake_g)
    loss_g = g_loss(loss, D(fake_g))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    D.requires_grad_(True)
    return Iteration(loss_d, loss_g, real_logits, fake_logits, real, fake)
