"""Train an SNGAN: `python -m sngan.train variant=reshaped [key=value ...]`, or under
`torchrun --nproc_per_node=N -m sngan.train ...` on N processes (sngan/distributed.py).

`main` is a thin Hydra wrapper; `train(cfg, run_dir)` is the loop, readable top to bottom:
n_dis discriminator steps, one generator step, EMA, then (at their cadences) diagnostics,
samples, sample-quality metrics and an atomic checkpoint.
"""

from __future__ import annotations

import inspect
import logging
import os
import random
import sys
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP

from sngan import checkpoint, distributed, runinfo
from sngan.batches import BatchStream
from sngan.config import check_config, check_saved_config, resolve_device
from sngan.data import build_dataset
from sngan.ema import build_ema, update_ema
from sngan.errors import RunDiverged, UserError, describe_os_error, is_write_error, write_error_fix
from sngan.graphed import GraphedIteration
from sngan.health import Health
from sngan.metrics import check_feature_extractor, fidelity_metrics, real_stats_cache_name
from sngan.models import build_discriminator, build_generator
from sngan.monitor import (GRAD_NORM_SAMPLES, Monitor, global_grad_norm, input_grad_norm, layer_input_sizes,
                           sigma_scalars)
from sngan.paths import writable_folder
from sngan.runlock import run_lock
from sngan.spectral import apply_spectral_norm
from sngan.status import write_status
from sngan.step import apply_speed_switches, gan_iteration

log = logging.getLogger(__name__)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # absolute: main is also called by import


def build_models(cfg: DictConfig, device: torch.device):
    """G, D (normalized by cfg.variant) and the optional EMA of G, on `device`."""
    m = cfg.model
    # Keys added after a checkpoint was written count as their defaults (today's models).
    layout, init = m.get("layout") or "paper_table", m.get("init")
    try:
        G = build_generator(m.name, resolution=cfg.dataset.resolution, z_dim=m.z_dim, g_ch=m.g_ch, layout=layout,
                            init=init, upsample=m.get("upsample") or "nearest")
        D = build_discriminator(m.name, resolution=cfg.dataset.resolution, d_ch=m.d_ch, layout=layout, init=init,
                                leaky_slope=m.get("leaky_slope"))
        apply_spectral_norm(D, cfg.variant.name, n_power_iterations=cfg.variant.get("n_power_iterations", 1))
        G, D = G.to(device), D.to(device)
    except ValueError as e:  # the builders name the bad value
        raise UserError(f"model: {e}") from None
    except (MemoryError, torch.OutOfMemoryError, RuntimeError) as e:  # widths too large for this machine
        if not isinstance(e, MemoryError) and "alloc" not in str(e).lower() and "out of memory" not in str(e).lower():
            raise
        raise UserError(f"model.g_ch={m.g_ch} / model.d_ch={m.d_ch}: the models do not fit in {device.type} memory "
                        f"({' '.join(str(e).split())[:120]}); use smaller widths") from None
    ema = None
    if cfg.train.ema_decay > 0:
        ema = build_ema(G, cfg.train.ema_decay)
    return G, D, ema


def load_weights(state: dict, source, G, D, ema) -> None:
    """G, D and the EMA from a checkpoint; weights that do not fit the models its own config
    describes (an edited or mixed-up file) are a UserError naming it and what to pass instead."""
    for name, module, weights in (("G", G, state["G"]), ("D", D, state["D"]),
                                  ("G_ema", ema, state.get("G_ema"))):
        if module is None:
            continue
        try:
            if not isinstance(weights, dict):
                raise TypeError(f"{name} is a {type(weights).__name__}, not a state dict")
            module.load_state_dict(weights)
        except (RuntimeError, TypeError, KeyError) as e:
            detail = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
            raise UserError(f"{source}: its {name} weights do not fit the model its config describes "
                            f"({detail[:160]}); {checkpoint.other_snapshot(Path(str(source)))}") from None


def restore_models(state: dict, device: torch.device, source=None):
    """(config, G, D, EMA or None) of a checkpoint (read from `source`, named in errors), weights
    loaded, on `device`."""
    source = source or "the checkpoint"
    check_saved_config(state["config"], source)
    cfg = OmegaConf.create(state["config"])
    G, D, ema = build_models(cfg, device)
    image_shape = (3, cfg.dataset.resolution, cfg.dataset.resolution)
    layer_input_sizes(D, image_shape, device)  # the `operator` variant learns its input size first
    load_weights(state, source, G, D, ema)
    return cfg, G, D, ema


def build_optimizers(cfg: DictConfig, G, D, device: torch.device):
    """Adam for G and D with their learning-rate schedules. On CUDA, the fused Adam kernel with
    capturable=True, its learning rate a device tensor the schedulers fill in place: a CUDA graph
    (train.cuda_graph) replays it, and the eager path runs the same arithmetic."""
    o = cfg.optim
    betas = (float(o.beta1), float(o.beta2))  # YAML `0` is an int, which Adam rejects
    opt_g = torch.optim.Adam(G.parameters(), lr=float(o.lr), betas=betas, **adam_options(device))
    opt_d = torch.optim.Adam(D.parameters(), lr=float(o.lr), betas=betas, **adam_options(device))
    steps = cfg.train.steps
    decay = (lambda step: max(0.0, 1.0 - step / steps)) if o.lr_decay == "linear" else (lambda step: 1.0)
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, decay)
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, decay)
    place_learning_rates((opt_g, opt_d, sched_g, sched_d), device)
    return opt_g, opt_d, sched_g, sched_d


def adam_options(device: torch.device) -> dict:
    """The trainer's Adam implementation for `device` (shared with the benchmark)."""
    return {"fused": True, "capturable": True} if device.type == "cuda" else {}


def place_learning_rates(optimizers: tuple, device: torch.device) -> None:
    """Each optimizer's learning rate as this device's kind (a device tensor on CUDA, else a float),
    also after loading a checkpoint written on the other kind. Recomputed from the schedule (a CUDA
    run's float32 tensors would round it), whose base rates are kept as floats."""
    opt_g, opt_d, sched_g, sched_d = optimizers
    for opt, sched in ((opt_g, sched_g), (opt_d, sched_d)):
        sched.base_lrs = [float(lr) for lr in sched.base_lrs]
        rates = [base * schedule(sched.last_epoch) for base, schedule in zip(sched.base_lrs, sched.lr_lambdas)]
        for group, base, lr in zip(opt.param_groups, sched.base_lrs, rates):
            group["lr"] = torch.tensor(lr, device=device) if device.type == "cuda" else lr
            group["initial_lr"] = base
        sched._last_lr = rates


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_seed(*key: int) -> int:
    """A seed for one rank's noise stream: (seed, rank) pairs never share a stream."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def real_data_metrics(cfg: DictConfig, dataset, device: torch.device):
    """G -> FID/IS/KID scalars against `dataset`, or None when periodic evaluation is off. The
    feature extractor is checked now, so missing weights fail the run at its start."""
    m = cfg.metrics
    if not m.during_training:
        return None
    check_feature_extractor(m.feature_extractor, m.inception_weights)
    writable_folder(m.cache_root, "metrics.cache_root")  # the real data's statistics are written there
    cache_name = real_stats_cache_name(cfg.dataset.name, cfg.dataset.get("root") or "",
                                       cfg.dataset.resolution, m.feature_extractor)

    def measure(G) -> dict[str, float]:
        values = fidelity_metrics(G, dataset, n=cfg.log.n_eval, cache_name=cache_name,
                                  cache_root=Path(m.cache_root), device=device,
                                  feature_extractor=m.feature_extractor, weights=m.inception_weights,
                                  seed=cfg.seed)
        return {f"metrics/{k}": v for k, v in values.items()}
    return measure


def wrap_for_speed_and_scale(cfg: DictConfig, G, D, device: torch.device, ctx: distributed.Context):
    """Apply train.channels_last / train.compile to G and D in place, and return the modules the
    two updates call: DDP wrappers under data parallelism, else G and D themselves."""
    apply_speed_switches(G, D, channels_last=cfg.train.channels_last, compile=cfg.train.compile)
    if not ctx.enabled:
        return G, D
    ids = [device.index] if device.type == "cuda" else None
    # No buffer broadcast at every forward: distributed.sync_buffers runs once per iteration.
    no_forward_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                       else {"broadcast_buffers": False})  # torch < 2.15
    return DDP(G, device_ids=ids, **no_forward_sync), DDP(D, device_ids=ids, **no_forward_sync)


def load_resume_state(cfg: DictConfig, run_dir: Path, overrides: list[str] | None,
                      is_main: bool = True) -> tuple[dict | None, DictConfig]:
    """(the checkpoint this run continues from, the config it continues with), or (None, cfg) for a
    fresh run. A resume takes the saved run's config plus the resumable command-line overrides
    (cfg.resume: false | true | auto | a path). A folder that holds a run is never started over."""
    resume_from = checkpoint.find_resume_checkpoint(cfg.resume, run_dir)
    if resume_from is None:
        if checkpoint.holds_run(run_dir):
            raise UserError(f"{run_dir} already holds a run: pass resume=true to continue it, "
                            "or choose another hydra.run.dir")
        return None, cfg
    state, resume_from = checkpoint.load_for_resume(resume_from, warn=log.warning)
    check_saved_config(state["config"], resume_from)
    cfg = checkpoint.resume_config(state["config"], cfg, overrides, resume_from)
    try:
        check_config(cfg)
    except UserError as e:
        raise UserError(f"cannot resume {resume_from}: {e}") from None
    state["resumed_from"] = resume_from
    return state, cfg


def restore_training_state(state: dict, cfg: DictConfig, ctx: distributed.Context, G, D, ema,
                           optimizers: tuple, stream: BatchStream, health: Health) -> int:
    """Load models, optimizers, schedulers, data position, RNG and health state; return the step."""
    source = state["resumed_from"]
    load_weights(state, source, G, D, ema)
    try:
        for obj, key in zip(optimizers, ("opt_g", "opt_d", "sched_g", "sched_d")):
            obj.load_state_dict(state[key])
        place_learning_rates(optimizers, next(G.parameters()).device)
        stream.restore(state["data"])
        health.load_state_dict(state.get("health") or {})  # checkpoints older than the health checks
        start = int(state["step"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{source}: its training state does not fit the run ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:160]}); {checkpoint.other_snapshot(Path(source))}") from None
    rngs = state.get("rng_ranks") or [state["rng"]]
    if ctx.rank < len(rngs):  # the same world size resumes exactly
        checkpoint.set_rng_state(rngs[ctx.rank])
    else:  # more ranks than the saved run had: a fresh stream for this rank
        seed_everything(rank_seed(cfg.seed, ctx.rank, start))
    log.info("resumed from %s at step %d", state["resumed_from"], start)
    return start


def check_device_settings(cfg: DictConfig, device: torch.device, ctx: distributed.Context) -> None:
    if cfg.train.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("train.amp=true needs a GPU with bf16 support; use train.amp=false")
    if cfg.train.batch_size % ctx.world_size:
        raise UserError(f"train.batch_size ({cfg.train.batch_size}) is the global batch: it must split "
                        f"evenly over the {ctx.world_size} ranks")
    g_batch_size = cfg.train.get("g_batch_size")
    if g_batch_size and g_batch_size % ctx.world_size:
        raise UserError(f"train.g_batch_size ({g_batch_size}) is global like train.batch_size: it must split "
                        f"evenly over the {ctx.world_size} ranks")
    # G's batch normalization needs 2 images per rank in each of its batches: D's fakes and G's update.
    for key, batch in (("train.batch_size", cfg.train.batch_size), ("train.g_batch_size", g_batch_size)):
        if ctx.enabled and batch is not None and batch // ctx.world_size < 2:
            raise UserError(f"{key} must be >= {2 * ctx.world_size} on {ctx.world_size} ranks (the global "
                            f"batch; G's batch normalization needs 2 images per rank), got {batch}")
    if cfg.train.get("cuda_graph") and device.type != "cuda":
        raise UserError(f"train.cuda_graph=true needs a CUDA device (this run's is {device.type}); "
                        "use train.cuda_graph=false")
    if cfg.train.get("cuda_graph") and ctx.enabled:
        raise UserError("train.cuda_graph=true is not supported under torchrun yet (DDP's gradient hooks "
                        "cannot be captured); run one process, or use train.cuda_graph=false")
    torch.backends.cudnn.benchmark = bool(cfg.train.cudnn_benchmark)
    set_determinism(bool(cfg.train.get("deterministic")))


def set_determinism(enabled: bool) -> None:
    """train.deterministic: kernels that give the same bits on every run (cuBLAS with a fixed
    workspace, deterministic cuDNN algorithms, no benchmarking; an op without a deterministic
    kernel raises). Set both ways: a sweep runs its jobs in one process."""
    if enabled:  # read by cuBLAS when it creates its handle: before the run's first matrix product
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    if enabled:
        torch.backends.cudnn.benchmark = False


def save_checkpoint(run_dir: Path, step: int, cfg: DictConfig, ctx: distributed.Context, G, D, ema,
                    optimizers: tuple, stream: BatchStream, health: Health) -> None:
    """Every rank takes part (its RNG state, and a digest proving the replicas still agree);
    rank 0 writes checkpoints/last.pt and a numbered snapshot."""
    rngs = distributed.gather_objects(checkpoint.rng_state(), ctx)
    digests = distributed.gather_objects(distributed.state_digest(G, D, ema), ctx) if ctx.enabled else []
    if len(set(digests)) > 1:
        raise RuntimeError(f"step {step}: the ranks' models differ (state digests {digests})")
    if not ctx.is_main:
        return
    opt_g, opt_d, sched_g, sched_d = optimizers
    checkpoint.save(run_dir / "checkpoints", {
        "step": step, "G": G.state_dict(), "D": D.state_dict(),
        "G_ema": ema.state_dict() if ema is not None else None,
        "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
        "sched_g": sched_g.state_dict(), "sched_d": sched_d.state_dict(),
        "rng": rngs[0], "rng_ranks": rngs, "replica_digests": digests, "data": stream.position,
        "health": health.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True),
    }, keep=cfg.ckpt.keep)


def diagnostics(it, G, D, scheds: tuple, monitor: Monitor, input_sizes: dict, step: int,
                images_per_step: int) -> dict[str, float]:
    """The scalars logged every `log.every` steps (read-only: see sngan/monitor.py)."""
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


def train(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None,
          on_ready: Callable[[DictConfig], None] | None = None) -> dict[str, float]:
    """Run (or resume) one training run in `run_dir`; return the final logged metrics.

    `overrides`: the command line's Hydra overrides; a resume applies only these (resumable ones)
    over the saved run's config. None: every key of `cfg` counts as set.
    `on_ready(cfg)`: called on rank 0 once every check has passed, before the run writes anything,
    with the config it trains with (the CLI writes the run's `.hydra/` records there).
    Under torchrun every rank calls this; rank 0's `run_dir` is the run's folder.
    """
    check_config(cfg)
    device = resolve_device(cfg.device)
    ctx = distributed.setup(device.type)
    device = distributed.rank_device(device, ctx)
    run_dir = Path(distributed.broadcast_object(str(run_dir), ctx))
    with run_lock(run_dir) if ctx.is_main else nullcontext():  # one trainer per run folder
        try:
            return train_locked(cfg, run_dir, overrides, device, ctx, on_ready)
        except OSError as e:  # a full or read-only disk: the checkpoint writer kept the previous one whole
            if not is_write_error(e):
                raise
            raise write_failure(e, run_dir) from None


def check_dataset_size(cfg: DictConfig, dataset) -> None:
    if len(dataset) < cfg.train.batch_size:
        where = f" in dataset.root={cfg.dataset.root}" if cfg.dataset.get("root") else ""
        raise UserError(f"train.batch_size must be at most the data set's {len(dataset)} images{where}, "
                        f"got {cfg.train.batch_size}; lower it or add images")


def write_failure(error: OSError, run_dir: Path) -> UserError:
    """A full or read-only file system during a run, as one line saying what is kept and what to do."""
    found = checkpoint.newest_readable(run_dir / "checkpoints")  # named only once read back whole
    if found is None:
        kept, then = "no checkpoint was written yet", "then start the run again"
    else:
        kept, then = (f"the last checkpoint {found[0]} (step {found[1]}) is intact",
                      f"then continue with resume=true hydra.run.dir={run_dir}")
    return UserError(f"cannot write {describe_os_error(error)}; {kept}: {write_error_fix(error)}, {then}")


def train_locked(cfg: DictConfig, run_dir: Path, overrides: list[str] | None, device: torch.device,
                 ctx: distributed.Context, on_ready: Callable[[DictConfig], None] | None = None) -> dict[str, float]:
    """The run itself, while this process holds the run folder (see `train`)."""
    saved, cfg = load_resume_state(cfg, run_dir, overrides, ctx.is_main)
    check_device_settings(cfg, device, ctx)
    if saved is not None and saved["step"] >= cfg.train.steps:
        log.info("%s is complete (step %d of train.steps=%d): nothing to do", run_dir, saved["step"],
                 cfg.train.steps)
        return {}
    seed_everything(cfg.seed)

    dataset = build_dataset(cfg.dataset)
    check_dataset_size(cfg, dataset)
    real_metrics = None  # FID/IS/KID on real data; its extractor is checked before any work
    if ctx.is_main and getattr(dataset, "oracle", None) is None:
        real_metrics = real_data_metrics(cfg, dataset, device)
    G, D, ema = build_models(cfg, device)
    opt_g, opt_d, sched_g, sched_d = build_optimizers(cfg, G, D, device)
    stream = BatchStream(dataset, batch_size=cfg.train.batch_size, seed=cfg.seed,
                         num_workers=cfg.dataset.num_workers, pin_memory=device.type == "cuda",
                         rank=ctx.rank, world_size=ctx.world_size)
    # Fix each normalized layer's input size now (the `operator` variant learns it from a forward).
    input_sizes = layer_input_sizes(D, tuple(dataset[0].shape), device)
    if ctx.rank > 0:  # every rank draws its own noise; rank 0 draws what a single process would
        seed_everything(rank_seed(cfg.seed, ctx.rank))
    health = Health(cfg.variant.name)
    start = 0
    if saved is not None:
        start = restore_training_state(saved, cfg, ctx, G, D, ema, (opt_g, opt_d, sched_g, sched_d),
                                       stream, health)
    # Every check has passed: from here on the run writes into its folder.
    if ctx.is_main and on_ready is not None:
        on_ready(cfg)
    if ctx.is_main:
        for line in runinfo.header(cfg, run_dir, G, D, device, start):
            log.info(line)

    G_update, D_update = wrap_for_speed_and_scale(cfg, G, D, device, ctx)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.preserve_format
    next_real = lambda: next(stream).to(device, non_blocking=True, memory_format=memory_format)
    amp_dtype = torch.bfloat16 if cfg.train.amp else None
    t, lg = cfg.train, cfg.log
    g_batch_size = t.get("g_batch_size") or t.batch_size  # fakes per G update; null: the batch size
    monitor = None
    if ctx.is_main:
        monitor = Monitor(run_dir, total_steps=t.steps, start_step=start, z_dim=G.z_dim, device=device,
                          seed=cfg.seed, n_eval=lg.n_eval, oracle=getattr(dataset, "oracle", None),
                          enabled_bar=lg.progress)
        monitor.sigma_layout()
    sample_G = ema.module if ema is not None else G
    sample_metrics = real_metrics or (monitor.oracle_metrics if monitor is not None else None)

    def iterate(next_real: Callable[[], torch.Tensor]):
        return gan_iteration(G, D, opt_g, opt_d, next_real, batch_size=t.batch_size // ctx.world_size,
                             g_batch_size=g_batch_size // ctx.world_size, n_dis=t.n_dis, loss=cfg.loss.name,
                             instance_noise=t.instance_noise, D_update=D_update, G_update=G_update,
                             amp_dtype=amp_dtype)
    if t.get("cuda_graph"):  # captured at the first step, after any resume has loaded its states
        graphed = GraphedIteration(iterate, modules=(G, D), optimizers=(opt_g, opt_d))
        run_iteration = lambda: graphed([next_real() for _ in range(t.n_dis)])
    else:
        run_iteration = lambda: iterate(next_real)

    save = lambda step: save_checkpoint(run_dir, step, cfg, ctx, G, D, ema, (opt_g, opt_d, sched_g, sched_d),
                                        stream, health)

    def check_finite(step: int, it) -> None:
        if not distributed.all_true(finite, ctx):
            raise RunDiverged(f"non-finite loss by step {step} (loss/d={it.loss_d.item()}, "
                              f"loss/g={it.loss_g.item()}); the last good checkpoint is kept", step=step)

    finite = torch.ones((), dtype=torch.bool, device=device)  # checked at log/checkpoint steps only
    metrics: dict[str, float] = {}
    values: dict[str, float] = {}
    final: dict[str, float] = {}
    step = start
    try:
        while step < t.steps:
            it = run_iteration()
            distributed.sync_buffers(ctx, G, D)
            sched_g.step()
            sched_d.step()
            step += 1
            if ema is not None and step > t.ema_start:
                update_ema(ema, G, t.ema_decay)
            finite &= torch.isfinite(it.loss_d) & torch.isfinite(it.loss_g)
            if monitor is not None:
                monitor.advance(step)

            # --- diagnostics (read-only, rank 0), health checks and checkpoints ------------------
            last = step == t.steps
            if step % lg.every == 0 or last:
                check_finite(step, it)
                if monitor is not None:
                    values = diagnostics(it, G, D, (sched_g, sched_d), monitor, input_sizes, step,
                                         t.batch_size * t.n_dis)
                    monitor.scalars(step, values)
                    check_health(health, monitor, step, values)
                    monitor.progress({k: values[k] for k in ("loss/d", "loss/g", "perf/img_per_s")})
            if sample_metrics is not None and (step % lg.eval_every == 0 or last):
                metrics = sample_metrics(sample_G)
                monitor.scalars(step, metrics)
                check_health(health, monitor, step, metrics)
            if monitor is not None and (step % lg.sample_every == 0 or last):
                monitor.sample_grid(step, sample_G)
            if step % cfg.ckpt.every == 0 or last:
                check_finite(step, it)
                save(step)
        final = {**metrics, **{k: v for k, v in values.items()
                               if k.startswith(("loss/", "sigma/lipschitz", "lipschitz/"))}}
        if monitor is not None:
            monitor.hparams(hparams_of(cfg), final)
    finally:
        if monitor is not None:
            monitor.close()  # the bar's last line before the footer
    if ctx.is_main:
        for line in runinfo.footer(step, final, health.summary(), run_dir):
            log.info(line)
        write_status(run_dir, "ok", step=step, first_warning_step=health.first_violation)
    return final


def hparams_of(cfg: DictConfig) -> dict:
    """The settings shown in TensorBoard's HPARAMS tab."""
    return {"variant": cfg.variant.name, "dataset": cfg.dataset.name, "model": cfg.model.name,
            "loss": cfg.loss.name, "lr": float(cfg.optim.lr), "beta1": float(cfg.optim.beta1),
            "beta2": float(cfg.optim.beta2), "n_dis": cfg.train.n_dis, "seed": cfg.seed,
            "batch_size": cfg.train.batch_size, "layout": cfg.model.get("layout") or "paper_table"}


def quiet_write_errors_in_threads() -> None:
    """A full disk seen by TensorBoard's writer thread comes back in the main thread, where it
    becomes the run's one-line error; the thread's own traceback would only repeat it. The same for
    a log file that takes no more lines (logging would print a traceback per line)."""
    default = threading.excepthook

    def hook(args) -> None:
        if not is_write_error(args.exc_value):
            default(args)
    threading.excepthook = hook
    logging.raiseExceptions = False


def console_only(level: int, message: str) -> None:
    """Log on the console but not in the run folder's train.log."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.handle(record)


@hydra.main(version_base="1.3", config_path=str(CONFIGS), config_name="train")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from sngan.records import write_records

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # In a sweep one job's end must not end the sweep (sys.exit would), and a job has no exit code:
    # every outcome goes to the job's status.json and the console instead.
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    writes = int(os.environ.get("RANK", "0")) == 0  # ranks > 0 keep no run folder of their own
    # A command that fails must leave a folder that holds a run as it was: only a new run records
    # its failure there.
    new_run = not checkpoint.holds_run(run_dir)
    ready = []

    def record(final_cfg: DictConfig) -> None:  # the checks have passed: the run's .hydra/ records
        write_records(run_dir, final_cfg, HydraConfig.instance().cfg)
        ready.append(True)

    def failed(reason: str, exc_info: bool = False) -> None:
        if not (writes and new_run):
            console_only(logging.ERROR, reason)
            return
        log.error("%s", reason, exc_info=exc_info)
        write_status(run_dir, "failed", reason=reason)
        if not ready:  # so that the sweep's report lists this job
            write_records(run_dir, cfg, HydraConfig.instance().cfg)

    quiet_write_errors_in_threads()
    try:
        train(cfg, run_dir, list(hydra_cfg.overrides.task), on_ready=record if writes else None)
    except UserError as e:
        if not in_sweep:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        failed(str(e))
    except RunDiverged as e:
        if writes:
            write_status(run_dir, "diverged", step=e.step, reason=str(e))
        if not in_sweep:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(3)
        log.error("%s", e)
    except KeyboardInterrupt:  # Ctrl-C: the checkpoints are whole (atomic writes); say how to go on
        if not in_sweep:
            print(f"error: interrupted; continue with resume=true hydra.run.dir={run_dir}", file=sys.stderr)
            sys.exit(130)
        raise
    except Exception as e:
        if not in_sweep:
            raise
        failed(f"{type(e).__name__}: {e}", exc_info=True)
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    distributed.quiet_hydra_on_other_ranks()
    # Call main through the importable module, not this __main__ copy: a parallel sweep launcher
    # (hydra/launcher=joblib) sends the task function to its workers by reference.
    from sngan.train import main as importable_main
    importable_main()
