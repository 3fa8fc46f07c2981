"""What the trainer reads at every log step, and the health rules run over it (read-only)."""

from __future__ import annotations

import logging

from sngan.diagnostics.health import Health
from sngan.diagnostics.monitor import GRAD_NORM_SAMPLES, Monitor, global_grad_norm, input_grad_norm, sigma_scalars

log = logging.getLogger("sngan.train")


def diagnostics(it, G, D, scheds: tuple, monitor: Monitor, input_sizes: dict, step: int,
                images_per_step: int) -> dict[str, float]:
    """The scalars logged every `log.every` steps (read-only: see sngan/diagnostics/monitor.py)."""
    sched_g, sched_d = scheds
    values = {"loss/d": it.loss_d.item(), "loss/g": it.loss_g.item(),
              "D/real": it.real_logits.mean().item(), "D/fake": it.fake_logits.mean().item(),
              "grad_norm/d": global_grad_norm(D), "grad_norm/g": global_grad_norm(G),
              "lr/d": float(sched_d.get_last_lr()[0]), "lr/g": float(sched_g.get_last_lr()[0]),
              "perf/img_per_s": monitor.images_per_second(step, images_per_step)}
    n = GRAD_NORM_SAMPLES
    values["lipschitz/grad_norm"] = 0.5 * (input_grad_norm(D, it.real[:n]) + input_grad_norm(D, it.fake[:n]))
    values.update(sigma_scalars(D, input_sizes, vectors=monitor.lanczos_vectors))
    return values


def check_health(health: Health, monitor: Monitor, step: int, values: dict[str, float]) -> None:
    """Run the health rules on one reading: health/* scalars, and WARNING lines in train.log."""
    scalars, warnings = health.check(step, values)
    monitor.scalars(step, scalars)
    for line in warnings:
        log.warning(line)


def final_scalars(metrics: dict[str, float], values: dict[str, float]) -> dict[str, float]:
    """What a run returns and shows in HPARAMS: its last metrics, losses and Lipschitz readings."""
    return {**metrics, **{k: v for k, v in values.items() if k.startswith(("loss/", "sigma/lipschitz", "lipschitz/"))}}
