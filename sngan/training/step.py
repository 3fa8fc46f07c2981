"""One GAN training iteration: n_dis discriminator updates, then one generator update.

Shared by the trainer and the benchmark, so that what is timed is what trains. Nothing here reads
a value back to the host: the returned tensors are only read at log steps.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from sngan.run.errors import RunDiverged
from sngan.training import distributed
from sngan.training.losses import d_loss, g_loss


class Iteration(NamedTuple):
    loss_d: Tensor       # last D update's loss
    loss_g: Tensor
    real_logits: Tensor  # D's outputs in the last D update
    fake_logits: Tensor
    real: Tensor         # the images of the last D update, as D saw them
    fake: Tensor


def apply_speed_switches(G: nn.Module, D: nn.Module, *, channels_last: bool, compile: bool) -> None:
    """train.channels_last / train.compile, applied to G and D in place (shared with the benchmark)."""
    if channels_last:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    if compile:
        G.compile()
        D.compile()


@contextmanager
def normalized_weights_once(D: nn.Module, amp: bool) -> Iterator[None]:
    """Each normalized weight is computed once per update, not once per D call. Under autocast it
    is computed first, outside the autocast region: torch's built-in spectral_norm iterates with
    torch.mv, which CUDA autocast runs in 16 bits (this package's variants guard themselves)."""
    with parametrize.cached():
        if amp:
            for module in D.modules():
                if parametrize.is_parametrized(module, "weight"):
                    module.weight  # computed and cached here, outside autocast
        yield


def gan_iteration(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                  next_real: Callable[[], Tensor], *, batch_size: int, n_dis: int, loss: str,
                  instance_noise: float = 0.0, D_update: nn.Module | None = None,
                  G_update: nn.Module | None = None, amp_dtype: torch.dtype | None = None,
                  g_batch_size: int | None = None) -> Iteration:
    """`D_update` / `G_update` (default D / G) are what the two updates call: DDP wrappers under
    data parallelism. G's update calls plain D, so D's gradient reducer never sees it.
    `amp_dtype` runs the forwards under autocast; losses are taken in float32. `g_batch_size`
    (default `batch_size`) fakes feed the G update (the authors' ResNet code draws 2x the batch)."""
    D_update, G_update = D_update or D, G_update or G
    device = next(G.parameters()).device
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    for _ in range(n_dis):
        real = next_real()
        z = torch.randn(batch_size, G.z_dim, device=device)
        with torch.no_grad(), autocast():
            fake = G(z).float()
        if instance_noise > 0:  # D sees noisy images: no perfect separation of exact data
            real = real + instance_noise * torch.randn_like(real)
            fake = fake + instance_noise * torch.randn_like(fake)
        with normalized_weights_once(D, amp_dtype is not None):
            with autocast():
                real_logits, fake_logits = D_update(real).float(), D_update(fake).float()
            loss_d = d_loss(loss, real_logits, fake_logits)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
        opt_d.step()

    D.requires_grad_(False)  # G's update needs gradients through D, not for D
    z = torch.randn(g_batch_size or batch_size, G.z_dim, device=device)
    with normalized_weights_once(D, amp_dtype is not None):
        with autocast():
            fake_g = G_update(z)
            if instance_noise > 0:
                fake_g = fake_g + instance_noise * torch.randn_like(fake_g)
            loss_g = g_loss(loss, D(fake_g).float())
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
    opt_g.step()
    D.requires_grad_(True)
    return Iteration(loss_d, loss_g, real_logits, fake_logits, real, fake)


def check_finite(finite: Tensor, step: int, it: Iteration, ctx: distributed.Context) -> None:
    """Raise RunDiverged unless every loss so far was finite on every rank. `finite` is accumulated
    on the device and read here, at log and checkpoint steps only (a read waits for the device)."""
    if not distributed.all_true(finite, ctx):
        raise RunDiverged(f"non-finite loss by step {step} (loss/d={it.loss_d.item()}, "
                          f"loss/g={it.loss_g.item()}); the last good checkpoint is kept", step=step)
