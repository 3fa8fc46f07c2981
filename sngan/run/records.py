"""The run folder's `.hydra/` records, written by the trainer itself once its checks have passed.

Hydra would write `.hydra/config.yaml`, `hydra.yaml` and `overrides.yaml` before the task starts,
so a command refused against an existing run (no `resume=true`, a changed setting, a missing data
set) would rewrite the records of a run whose checkpoints still say otherwise. `hydra.output_subdir`
is null in configs/train.yaml, and the trainer writes the same three files, with the contents
Hydra gives them, only for a new run or an accepted resume (config.yaml then holds the config the
run goes on with); a resume in the run's own folder writes them once it has written a checkpoint of
its own (sngan.training.setup), so a failed resume leaves them as they were. Tools read them as
before (scripts/compare_variants.py)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sngan.run.checkpoint import atomic_write_text, holds_run
from sngan.run.lock import RunInUse, run_lock
from sngan.run.preflight import CREATED_HERE
from sngan.run.info import console_only
from sngan.run.status import clear_status, write_status

log = logging.getLogger("sngan.train")

RECORDS = ".hydra"


def write_records(run_dir: Path, cfg: DictConfig, hydra_root: DictConfig) -> None:
    """Write RUN/.hydra/{config,hydra,overrides}.yaml. `hydra_root`: {"hydra": ...}, as Hydra keeps it
    (HydraConfig.instance().cfg)."""
    folder = Path(run_dir) / RECORDS
    hydra_root = OmegaConf.create(OmegaConf.to_container(hydra_root, resolve=False))
    hydra_root.hydra.output_subdir = RECORDS  # where the records are, as Hydra would have said
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(folder / "hydra.yaml", OmegaConf.to_yaml(hydra_root))
    atomic_write_text(folder / "overrides.yaml", OmegaConf.to_yaml(hydra_root.hydra.overrides.task))


class CommandRecords:
    """What one training command leaves in its run folder: the `.hydra/` records once its checks
    have passed (`ready`), and, for a new run only, why it failed (`failed`: status.json and the
    records, so that a sweep's report lists the job). A folder that already holds a run keeps its
    records as they were: the failure goes to the console alone. `writes`: this process keeps the
    run folder (rank 0)."""

    def __init__(self, run_dir: Path, cfg: DictConfig, hydra_root: DictConfig, writes: bool):
        self.run_dir, self.cfg, self.hydra_root, self.writes = run_dir, cfg, hydra_root, writes
        self.new_run = not holds_run(run_dir)
        self.written = False

    def ready(self, final_cfg: DictConfig) -> None:
        """The records of the run now training here; an earlier command's outcome no longer holds."""
        write_records(self.run_dir, final_cfg, self.hydra_root)
        clear_status(self.run_dir)
        self.written = True

    def refused(self, log_name: str) -> None:
        """A single new run refused before it started (a missing data set, no CUDA device, ...) in a
        folder this command created (sngan.run.preflight): when the folder holds only the log file
        Hydra opened for it, and no other trainer holds it, it goes, so that a refused command leaves
        nothing behind. Anything else stays as it is; a removal that fails is left at that."""
        if not (self.writes and self.new_run) or self.written or self.run_dir.resolve() not in CREATED_HERE:
            return
        try:
            with run_lock(self.run_dir):
                entries = list(self.run_dir.iterdir())
                if any(entry.name != log_name or not entry.is_file() for entry in entries):
                    return
                log_file = (self.run_dir / log_name).resolve()
                for handler in logging.getLogger().handlers[:]:  # Hydra's file handler holds it open
                    if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve() == log_file:
                        logging.getLogger().removeHandler(handler)
                        handler.close()
                for entry in entries:
                    entry.unlink()
            self.run_dir.rmdir()
        except (RunInUse, OSError):
            pass

    def failed(self, reason: str, exc_info: bool = False, folder_is_ours: bool = True) -> None:
        """`folder_is_ours` False: another trainer holds the folder, whose records are its own."""
        if not (self.writes and self.new_run and folder_is_ours):
            console_only(logging.ERROR, reason)
            return
        log.error("%s", reason, exc_info=exc_info)
        write_status(self.run_dir, "failed", reason=reason)
        if not self.written:
            write_records(self.run_dir, self.cfg, self.hydra_root)
