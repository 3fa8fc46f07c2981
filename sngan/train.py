"""Train an SNGAN: `python -m sngan.train variant=reshaped [key=value ...]`.

`main` is a thin Hydra wrapper; `train(cfg, run_dir)` is the loop, readable top to bottom:
n_dis discriminator steps, one generator step, EMA, then (at their cadences) diagnostics,
samples, oracle metrics and an atomic checkpoint.
"""

from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sngan import checkpoint
from sngan.batches import BatchStream
from sngan.config import check_config, resolve_device
from sngan.data import build_dataset
from sngan.errors import RunDiverged, UserError
from sngan.models import build_discriminator, build_generator
from sngan.monitor import Monitor, global_grad_norm, input_grad_norm, layer_input_sizes, sigma_scalars
from sngan.spectral import apply_spectral_norm
from sngan.step import gan_iteration

log = logging.getLogger(__name__)


def build_models(cfg: DictConfig, device: torch.device):
    """G, D (normalized by cfg.variant) and the optional EMA of G, on `device`."""
    m = cfg.model
    try:
        G = build_generator(m.name, resolution=cfg.dataset.resolution, z_dim=m.z_dim, g_ch=m.g_ch)
        D = build_discriminator(m.name, resolution=cfg.dataset.resolution, d_ch=m.d_ch)
    except ValueError as e:  # the builders name the bad value
        raise UserError(f"model: {e}") from None
    apply_spectral_norm(D, cfg.variant.name, n_power_iterations=cfg.variant.get("n_power_iterations", 1))
    G, D = G.to(device), D.to(device)
    ema = None
    if cfg.train.ema_decay > 0:
        ema = AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay), use_buffers=True)
    return G, D, ema


def restore_models(state: dict, device: torch.device):
    """(config, G, D, EMA or None) of a checkpoint, weights loaded, on `device`."""
    cfg = OmegaConf.create(state["config"])
    G, D, ema = build_models(cfg, device)
    image_shape = (3, cfg.dataset.resolution, cfg.dataset.resolution)
    layer_input_sizes(D, image_shape, device)  # the `operator` variant learns its input size first
    G.load_state_dict(state["G"])
    D.load_state_dict(state["D"])
    if ema is not None:
        ema.load_state_dict(state["G_ema"])
    return cfg, G, D, ema


def build_optimizers(cfg: DictConfig, G, D):
    o = cfg.optim
    betas = (float(o.beta1), float(o.beta2))  # YAML `0` is an int, which Adam rejects
    opt_g = torch.optim.Adam(G.parameters(), lr=float(o.lr), betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=float(o.lr), betas=betas)
    steps = cfg.train.steps
    decay = (lambda step: max(0.0, 1.0 - step / steps)) if o.lr_decay == "linear" else (lambda step: 1.0)
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, decay)
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, decay)
    return opt_g, opt_d, sched_g, sched_d


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Run (or resume) one training run in `run_dir`; return the final logged metrics."""
    check_config(cfg)
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    resume_from = checkpoint.find_resume_checkpoint(cfg.resume, run_dir)
    seed_everything(cfg.seed)

    dataset = build_dataset(cfg.dataset)
    G, D, ema = build_models(cfg, device)
    opt_g, opt_d, sched_g, sched_d = build_optimizers(cfg, G, D)
    stream = BatchStream(dataset, batch_size=cfg.train.batch_size, seed=cfg.seed,
                         num_workers=cfg.dataset.num_workers, pin_memory=device.type == "cuda")
    # Fix each normalized layer's input size now (the `operator` variant learns it from a forward).
    input_sizes = layer_input_sizes(D, tuple(dataset[0].shape), device)

    start = 0
    if resume_from is not None:
        state, resume_from = checkpoint.load_for_resume(resume_from, warn=log.warning)
        changed = checkpoint.config_differences(state["config"], OmegaConf.to_container(cfg, resolve=True))
        if changed:
            raise UserError(f"cannot resume {resume_from}: these settings differ from the saved run: "
                            f"{', '.join(changed)} (only {', '.join(checkpoint.RESUMABLE_CHANGES)} may change)")
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        if ema is not None:
            ema.load_state_dict(state["G_ema"])
        for obj, key in ((opt_g, "opt_g"), (opt_d, "opt_d"), (sched_g, "sched_g"), (sched_d, "sched_d")):
            obj.load_state_dict(state[key])
        stream.restore(state["data"])
        checkpoint.set_rng_state(state["rng"])
        start = state["step"]
        log.info("resumed from %s at step %d", resume_from, start)
    elif (run_dir / "checkpoints" / checkpoint.LAST).exists():
        raise UserError(f"{run_dir} already holds a run: pass resume=true to continue it, "
                        "or choose another hydra.run.dir")

    t, lg, ck = cfg.train, cfg.log, cfg.ckpt
    monitor = Monitor(run_dir, total_steps=t.steps, start_step=start, z_dim=G.z_dim, device=device,
                      seed=cfg.seed, n_eval=lg.n_eval, oracle=getattr(dataset, "oracle", None),
                      enabled_bar=lg.progress)
    sample_G = ema.module if ema is not None else G

    def save(step: int) -> None:
        checkpoint.save(run_dir / "checkpoints", {
            "step": step, "G": G.state_dict(), "D": D.state_dict(),
            "G_ema": ema.state_dict() if ema is not None else None,
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(),
            "rng": checkpoint.rng_state(), "data": stream.position,
            "config": OmegaConf.to_container(cfg, resolve=True),
        }, keep=ck.keep)

    finite = torch.ones((), dtype=torch.bool, device=device)  # checked at log/checkpoint steps only
    metrics: dict[str, float] = {}
    values: dict[str, float] = {}
    step = start
    try:
        while step < t.steps:
            it = gan_iteration(G, D, opt_g, opt_d, lambda: next(stream).to(device, non_blocking=True),
                               batch_size=t.batch_size, n_dis=t.n_dis, loss=cfg.loss.name,
                               instance_noise=t.instance_noise)
            sched_g.step()
            sched_d.step()
            step += 1
            if ema is not None and step > t.ema_start:
                ema.update_parameters(G)
            finite &= torch.isfinite(it.loss_d) & torch.isfinite(it.loss_g)

            # --- diagnostics (read-only) and checkpoints -----------------------------------------
            last = step == t.steps
            if step % lg.every == 0 or last:
                if not finite:
                    raise RunDiverged(f"non-finite loss by step {step} (loss/d={it.loss_d.item()}, "
                                      f"loss/g={it.loss_g.item()}); the last good checkpoint is kept")
                values = {"loss/d": it.loss_d.item(), "loss/g": it.loss_g.item(),
                          "D/real": it.real_logits.mean().item(), "D/fake": it.fake_logits.mean().item(),
                          "grad_norm/d": global_grad_norm(D), "grad_norm/g": global_grad_norm(G),
                          "lr/d": sched_d.get_last_lr()[0], "lr/g": sched_g.get_last_lr()[0],
                          "perf/img_per_s": monitor.images_per_second(step, t.batch_size * t.n_dis)}
                values["lipschitz/grad_norm"] = 0.5 * (input_grad_norm(D, it.real) + input_grad_norm(D, it.fake))
                values.update(sigma_scalars(D, input_sizes))
                monitor.scalars(step, values)
                monitor.progress(step, {k: values[k] for k in ("loss/d", "loss/g", "perf/img_per_s")})
            if step % lg.eval_every == 0 or last:
                metrics = monitor.oracle_metrics(sample_G)
                monitor.scalars(step, metrics)
            if step % lg.sample_every == 0 or last:
                monitor.sample_grid(step, sample_G)
            if step % ck.every == 0 or last:
                if not finite:
                    raise RunDiverged(f"non-finite loss by step {step}; the last good checkpoint is kept")
                save(step)
        final = {**metrics, **{k: v for k, v in values.items()
                               if k.startswith(("loss/", "sigma/lipschitz", "lipschitz/"))}}
        monitor.hparams(hparams_of(cfg), final)
    finally:
        monitor.close()
    return final


def hparams_of(cfg: DictConfig) -> dict:
    """The settings shown in TensorBoard's HPARAMS tab."""
    return {"variant": cfg.variant.name, "dataset": cfg.dataset.name, "model": cfg.model.name,
            "loss": cfg.loss.name, "lr": float(cfg.optim.lr), "beta1": float(cfg.optim.beta1),
            "beta2": float(cfg.optim.beta2), "n_dis": cfg.train.n_dis, "seed": cfg.seed,
            "batch_size": cfg.train.batch_size}


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        train(cfg, run_dir)
    except (UserError, RunDiverged) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, UserError) else 3)



if __name__ == "__main__":
    main()
