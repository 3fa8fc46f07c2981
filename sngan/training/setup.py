"""Everything one run trains with, built before its loop: `open_run` checks the config, takes
the run folder, resumes or starts, and yields a `Run` of plain objects (sngan.train's loop uses
them); a full or read-only disk anywhere inside it ends as one line saying what is kept."""

from __future__ import annotations

import inspect
import logging
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from sngan.config import check_config, resolve_device
from sngan.data import build_dataset, check_dataset_size
from sngan.data.batches import BatchStream
from sngan.diagnostics.health import Health
from sngan.diagnostics.metrics import RealDataMetrics, check_feature_extractor
from sngan.diagnostics.monitor import Monitor, layer_input_sizes
from sngan.models import build_models
from sngan.run import checkpoint, info as runinfo
from sngan.run.errors import UserError, is_write_error
from sngan.run.failures import write_failure
from sngan.run.lock import run_lock
from sngan.run.paths import writable_folder
from sngan.run.resume import load_resume_state
from sngan.run.status import write_status
from sngan.training import distributed
from sngan.training.determinism import rank_seed, seed_everything, set_determinism
from sngan.training.graphed import GraphedIteration
from sngan.training.optim import build_optimizers, match_state_layouts
from sngan.training.state import restore_training_state, save_checkpoint
from sngan.training.step import Iteration, apply_speed_switches, gan_iteration

log = logging.getLogger("sngan.train")


class Iterations:
    """One training iteration per call (n_dis D updates, one G update), eager, or replayed from a
    CUDA graph captured at the first call, after any resume has loaded its states."""

    def __init__(self, cfg: DictConfig, ctx: distributed.Context, G: nn.Module, D: nn.Module, optimizers: tuple,
                 stream: BatchStream, device: torch.device, G_update: nn.Module, D_update: nn.Module):
        t = cfg.train
        self.G, self.D, self.opt_g, self.opt_d = G, D, optimizers[0], optimizers[1]
        self.stream, self.device, self.n_dis = stream, device, t.n_dis
        self.memory_format = torch.channels_last if t.channels_last else torch.preserve_format
        g_batch_size = t.g_batch_size or t.batch_size  # fakes per G update; null: the batch size
        self.options = dict(batch_size=t.batch_size // ctx.world_size, g_batch_size=g_batch_size // ctx.world_size,
                            n_dis=t.n_dis, loss=cfg.loss.name, instance_noise=t.instance_noise, D_update=D_update,
                            G_update=G_update, amp_dtype=torch.bfloat16 if t.amp else None)
        self.graphed = GraphedIteration(self.eager, modules=(G, D), optimizers=self.optimizers) if t.cuda_graph else None

    @property
    def optimizers(self) -> tuple:
        return self.opt_g, self.opt_d

    def next_real(self) -> Tensor:
        return next(self.stream).to(self.device, non_blocking=True, memory_format=self.memory_format)

    def eager(self, next_real: Callable[[], Tensor]) -> Iteration:
        return gan_iteration(self.G, self.D, self.opt_g, self.opt_d, next_real, **self.options)

    def __call__(self) -> Iteration:
        if self.graphed is not None:
            return self.graphed([self.next_real() for _ in range(self.n_dis)])
        return self.eager(self.next_real)


@dataclass
class Run:
    """What the loop reads and advances. `ctx`: this process's place under torchrun; `monitor`:
    TensorBoard and the bar (rank 0 only, else None); `sample_G`: the generator samples come from
    (the EMA when kept); `sample_metrics`: G -> quality scalars (None: none are taken)."""

    cfg: DictConfig
    run_dir: Path
    device: torch.device
    ctx: distributed.Context
    G: nn.Module
    D: nn.Module
    ema: nn.Module | None
    optimizers: tuple            # (opt_g, opt_d, sched_g, sched_d)
    stream: BatchStream
    health: Health
    monitor: Monitor | None
    input_sizes: dict
    iteration: Iterations
    sample_G: nn.Module
    sample_metrics: Callable[[nn.Module], dict[str, float]] | None
    start: int
    pending_records: Callable[[], None] | None = None  # a resume's .hydra/ records, after its first checkpoint

    @property
    def schedulers(self) -> tuple:
        return self.optimizers[2], self.optimizers[3]

    def finish(self, step: int, final: dict[str, float]) -> None:
        """Rank 0: the footer (final numbers, health verdict, the commands that go on) and status.json."""
        if not self.ctx.is_main:
            return
        for line in runinfo.footer(step, final, self.health.summary(), self.run_dir,
                                   lengthens=self.cfg.optim.lr_decay != "linear", chain=self.cfg.model.name == "cnn"):
            log.info(line)
        write_status(self.run_dir, "ok", step=step, first_warning_step=self.health.first_violation)

    def save_checkpoint(self, step: int) -> None:
        save_checkpoint(self.run_dir, step, self.cfg, self.ctx, self.G, self.D, self.ema, self.optimizers,
                        self.stream, self.health)
        if self.pending_records is not None:  # the folder now holds a checkpoint this config made
            self.pending_records()
            self.pending_records = None


@contextmanager
def open_run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None,
             on_ready: Callable[[DictConfig], None] | None = None) -> Iterator[Run | None]:
    """The run to train in `run_dir` (None: it is complete), while this process holds the folder.
    See sngan.train.train for `overrides` and `on_ready`."""
    check_config(cfg)
    device = resolve_device(cfg.device)
    ctx = distributed.setup(device.type)
    device = distributed.rank_device(device, ctx)
    run_dir = Path(distributed.broadcast_object(str(run_dir), ctx))
    with run_lock(run_dir) if ctx.is_main else nullcontext():  # one trainer per run folder
        try:
            yield build_run(cfg, run_dir, overrides, device, ctx, on_ready)
        except OSError as e:  # a full or read-only disk: the checkpoint writer kept the previous one whole
            if not is_write_error(e):
                raise
            raise write_failure(e, run_dir) from None


def build_run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None, device: torch.device,
              ctx: distributed.Context, on_ready: Callable[[DictConfig], None] | None) -> Run | None:
    saved, cfg = load_resume_state(cfg, run_dir, overrides, ctx.is_main)
    check_device_settings(cfg, device, ctx)
    if saved is not None and saved["step"] >= cfg.train.steps:
        if Path(saved["resumed_from"]).resolve().parent != (run_dir / "checkpoints").resolve():  # a fork
            raise UserError(f"{saved['resumed_from']} is already at step {saved['step']} of train.steps="
                            f"{cfg.train.steps}: pass a larger train.steps to continue it in {run_dir}")
        log.info("%s is complete (step %d of train.steps=%d): nothing to do", run_dir, saved["step"],
                 cfg.train.steps)
        return None
    seed_everything(cfg.seed)

    dataset = build_dataset(cfg.dataset)
    check_dataset_size(dataset, cfg.train.batch_size, cfg.dataset.get("root"))
    real_metrics = None  # FID/IS/KID on real data; its extractor is checked before any work
    if ctx.is_main and getattr(dataset, "oracle", None) is None:
        real_metrics = real_data_metrics(cfg, dataset, device)
    G, D, ema = build_models(cfg, device)
    optimizers = build_optimizers(cfg, G, D, device)
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
        start = restore_training_state(saved, cfg, ctx, G, D, ema, optimizers, stream, health)
    # Every check has passed: from here on the run writes into its folder. A run continued in its own
    # folder keeps the records its checkpoints were made with until it has written one of its own.
    records = partial(on_ready, cfg) if ctx.is_main and on_ready is not None else None
    if records is not None and not (saved is not None and checkpoint.holds_run(run_dir)):
        records()
        records = None
    if ctx.is_main:
        for line in runinfo.header(cfg, run_dir, G, D, device, start):
            log.info(line)

    G_update, D_update = wrap_for_speed_and_scale(cfg, G, D, device, ctx)
    match_state_layouts(*optimizers[:2])  # a resume may have switched train.channels_last
    monitor = open_monitor(cfg, run_dir, G, device, start, dataset) if ctx.is_main else None
    sample_G = ema.module if ema is not None else G
    sample_metrics = real_metrics or (monitor.oracle_metrics if monitor is not None else None)
    iteration = Iterations(cfg, ctx, G, D, optimizers, stream, device, G_update, D_update)
    return Run(cfg, run_dir, device, ctx, G, D, ema, optimizers, stream, health, monitor, input_sizes, iteration,
               sample_G, sample_metrics, start, records)


def check_device_settings(cfg: DictConfig, device: torch.device, ctx: distributed.Context) -> None:
    """The config's rules that need the run's device and ranks, then the kernels it asks for."""
    check_config(cfg, device, ctx.world_size if ctx.enabled else None)
    torch.backends.cudnn.benchmark = bool(cfg.train.cudnn_benchmark)
    set_determinism(bool(cfg.train.deterministic))


def real_data_metrics(cfg: DictConfig, dataset, device: torch.device) -> RealDataMetrics | None:
    """G -> FID/IS/KID scalars against `dataset`, or None when periodic evaluation is off. The
    feature extractor is checked now, so missing weights fail the run at its start."""
    m = cfg.metrics
    if not m.during_training:
        return None
    check_feature_extractor(m.feature_extractor, m.inception_weights)
    writable_folder(m.cache_root, "metrics.cache_root")  # the real data's statistics are written there
    return RealDataMetrics(dataset, dataset_name=cfg.dataset.name, root=cfg.dataset.get("root") or "",
                           resolution=cfg.dataset.resolution, n=cfg.log.n_eval, cache_root=Path(m.cache_root),
                           device=device, feature_extractor=m.feature_extractor, weights=m.inception_weights,
                           seed=cfg.seed, crop=cfg.dataset.get("crop"))


def open_monitor(cfg: DictConfig, run_dir: Path, G: nn.Module, device: torch.device, start: int, dataset) -> Monitor:
    monitor = Monitor(run_dir, total_steps=cfg.train.steps, start_step=start, z_dim=G.z_dim, device=device,
                      seed=cfg.seed, n_eval=cfg.log.n_eval, oracle=getattr(dataset, "oracle", None),
                      enabled_bar=cfg.log.progress)
    monitor.sigma_layout()
    return monitor


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
