"""Train an SNGAN: `python -m sngan.train variant=reshaped [key=value ...]`, or under
`torchrun --nproc_per_node=N -m sngan.train ...` on N processes (sngan/training/distributed.py).

`train(cfg, run_dir)` is the loop, top to bottom: n_dis discriminator steps and one generator
step, the EMA, then at their cadences the read-only diagnostics and health checks, sample-quality
metrics, a sample grid and an atomic checkpoint. What it trains with comes from one setup call
(sngan/training/setup.py); `main` is the Hydra command around it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable

import hydra
import torch
from omegaconf import DictConfig

from sngan.diagnostics.readings import check_health, diagnostics, final_scalars
from sngan.run.errors import RunDiverged, UserError, is_out_of_memory, out_of_memory
from sngan.run.cli import refuse
from sngan.run.failures import quiet_write_errors_in_threads
from sngan.run.info import after_interrupt, hparams_of
from sngan.run.records import CommandRecords
from sngan.run.lock import RunInUse
from sngan.run.status import write_status
from sngan.training import distributed
from sngan.training.ema import update_ema
from sngan.training.setup import open_run
from sngan.training.step import check_finite

log = logging.getLogger(__name__)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # absolute: main is also called by import


def train(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None,
          on_ready: Callable[[DictConfig], None] | None = None) -> dict[str, float]:
    """Run (or resume) one training run in `run_dir`; return the final logged metrics.

    `overrides`: the command line's Hydra overrides; a resume applies only these (resumable ones)
    over the saved run's config. None: every key of `cfg` counts as set.
    `on_ready(cfg)`: called on rank 0 once every check has passed, before the run writes anything,
    with the config it trains with (the CLI writes the run's `.hydra/` records there).
    Under torchrun every rank calls this; rank 0's `run_dir` is the run's folder.
    """
    with open_run(cfg, run_dir, overrides, on_ready) as run:
        if run is None:  # complete: nothing to do
            return {}
        t, lg, ctx, monitor, health = run.cfg.train, run.cfg.log, run.ctx, run.monitor, run.health
        G, D, ema = run.G, run.D, run.ema
        finite = torch.ones((), dtype=torch.bool, device=run.device)  # read at log/checkpoint steps only
        metrics: dict[str, float] = {}
        values: dict[str, float] = {}
        step = run.start
        try:
            while step < t.steps:
                it = run.iteration()
                distributed.sync_buffers(ctx, G, D)
                for scheduler in run.schedulers:
                    scheduler.step()
                step += 1
                if ema is not None:  # until train.ema_start it follows G: samples and metrics come from it
                    update_ema(ema, G, t.ema_decay if step > t.ema_start else 0.0)
                finite &= torch.isfinite(it.loss_d) & torch.isfinite(it.loss_g)
                if monitor is not None:
                    monitor.advance(step)

                # --- diagnostics (read-only, rank 0), health checks and checkpoints ------------------
                last = step == t.steps
                if step % lg.every == 0 or last:
                    check_finite(finite, step, it, ctx)
                    if monitor is not None:
                        values = diagnostics(it, G, D, run.schedulers, monitor, run.input_sizes, step,
                                             t.batch_size * t.n_dis)
                        monitor.scalars(step, values)
                        check_health(health, monitor, step, values)
                        monitor.progress({k: values[k] for k in ("loss/d", "loss/g", "perf/img_per_s")})
                if run.sample_metrics is not None and (step % lg.eval_every == 0 or last):
                    metrics = run.sample_metrics(run.sample_G)
                    monitor.scalars(step, metrics)
                    check_health(health, monitor, step, metrics)
                if monitor is not None and (step % lg.sample_every == 0 or last):
                    monitor.sample_grid(step, run.sample_G)
                if step % run.cfg.ckpt.every == 0 or last:
                    check_finite(finite, step, it, ctx)
                    run.save_checkpoint(step)
            final = final_scalars(metrics, values)
            if monitor is not None:
                monitor.hparams(hparams_of(run.cfg), final)
        finally:
            if monitor is not None:
                monitor.close()  # the bar's last line before the footer
        run.finish(step, final)
        return final


@hydra.main(version_base="1.3", config_path=str(CONFIGS), config_name="train")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # In a sweep one job's end must not end the sweep (sys.exit would), and a job has no exit code:
    # every outcome goes to the job's status.json and the console instead.
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    writes = int(os.environ.get("RANK", "0")) == 0  # ranks > 0 keep no run folder of their own
    records = CommandRecords(run_dir, cfg, HydraConfig.instance().cfg, writes)
    quiet_write_errors_in_threads()
    try:
        train(cfg, run_dir, list(hydra_cfg.overrides.task), on_ready=records.ready if writes else None)
    except UserError as e:
        if not in_sweep:
            if not isinstance(e, RunInUse):  # the folder and its log are another trainer's
                records.refused(f"{hydra_cfg.job.name}.log")
            refuse(e)
        records.failed(str(e), folder_is_ours=not isinstance(e, RunInUse))
    except RunDiverged as e:
        if writes:
            write_status(run_dir, "diverged", step=e.step, reason=str(e))
        if not in_sweep:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(3)
        log.error("%s", e)
    except KeyboardInterrupt:  # Ctrl-C: the checkpoints are whole (atomic writes); say how to go on
        if writes:  # rank 0 speaks for the run
            sweep_dir = Path(hydra_cfg.sweep.dir) if in_sweep else None
            print(f"error: interrupted; {after_interrupt(run_dir, list(hydra_cfg.overrides.task), sweep_dir)}",
                  file=sys.stderr)
        sys.exit(130)  # a sweep's other jobs too
    except Exception as e:
        if not in_sweep and is_out_of_memory(e):  # e.g. log.n_eval=10**12, or a batch too large for the GPU
            records.refused(f"{hydra_cfg.job.name}.log")
            what = "the run's tensors"
            fix = ("a smaller train.batch_size or model.g_ch / model.d_ch needs a new run; a smaller log.n_eval may "
                   "also be set on resume, from its last checkpoint, which is whole")
            refuse(out_of_memory(e, what, fix))
        if not in_sweep:
            raise
        records.failed(f"{type(e).__name__}: {e}", exc_info=True)
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    distributed.quiet_hydra_on_other_ranks()
    # Call main through the importable module, not this __main__ copy: a parallel sweep launcher
    # (hydra/launcher=joblib) sends the task function to its workers by reference.
    from sngan.train import main as importable_main
    try:
        importable_main()
    except SystemExit as e:
        if distributed.launched():
            distributed.leave(e.code)
        raise
    except KeyboardInterrupt:  # outside a job: Hydra starting up, or a parallel launcher waiting for its workers
        if {"-m", "--multirun"} & set(sys.argv[1:]):
            print("error: interrupted; relaunch the sweep with the same arguments, resume=auto and its "
                  "hydra.sweep.dir: finished runs are skipped, the others continue from their last checkpoint",
                  file=sys.stderr)
        else:
            print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    if distributed.launched():
        distributed.leave(0)
