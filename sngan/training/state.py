"""A run's training state in and out of a checkpoint: models, optimizers, schedules, data
position, every rank's RNG and the health monitor's memory."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sngan.data.batches import BatchStream
from sngan.diagnostics.health import Health
from sngan.models import load_weights
from sngan.run import checkpoint
from sngan.run.errors import UserError
from sngan.training import distributed
from sngan.training.determinism import rank_seed, seed_everything
from sngan.training.optim import for_this_device, place_learning_rates

log = logging.getLogger("sngan.train")


def restore_training_state(state: dict, cfg: DictConfig, ctx: distributed.Context, G, D, ema,
                           optimizers: tuple, stream: BatchStream, health: Health) -> int:
    """Load models, optimizers, schedulers, data position, RNG and health state; return the step."""
    source = state["resumed_from"]
    load_weights(state, source, G, D, ema)
    try:
        for obj, key in zip(optimizers, ("opt_g", "opt_d", "sched_g", "sched_d")):
            obj.load_state_dict(for_this_device(obj, state[key]) if key.startswith("opt") else state[key])
        place_learning_rates(optimizers, next(G.parameters()).device)
        stream.restore(state["data"])
        health.load_state_dict(state.get("health") or {})  # checkpoints older than the health checks
        start = int(state["step"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{source}: its training state does not fit the run ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:160]}); {checkpoint.other_snapshot(Path(source), checkpoint.RESUME_KEYS)}") from None
    rngs = state.get("rng_ranks") or [state["rng"]]
    if ctx.rank < len(rngs):  # the same world size resumes exactly
        checkpoint.set_rng_state(rngs[ctx.rank])
    else:  # more ranks than the saved run had: a fresh stream for this rank
        seed_everything(rank_seed(cfg.seed, ctx.rank, start))
    log.info("resumed from %s at step %d", state["resumed_from"], start)
    return start


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
