"""Checks a Hydra command passes before Hydra creates anything (a Hydra callback, configs/train.yaml).

Hydra creates the run folder and opens its log file before the task starts; a bad value, or a
run folder that cannot be written (a read-only file system, a path under a file, `/proc`), would
otherwise end in a Hydra traceback or leave an empty run folder behind. A single run is checked
whole here (the values, then the folder); in a sweep each job checks its own values, so that one
bad value fails only its job, and only the sweep folder is checked up front.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sngan.config import check_config
from sngan.run.errors import UserError
from sngan.run.paths import writable_folder


def _refuse(error: UserError) -> None:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def check_run_folder(run_dir: Path, log_name: str) -> None:
    """The run folder can be created and written, and its log file is not a folder."""
    writable_folder(run_dir, "hydra.run.dir")
    log_file = Path(run_dir) / log_name
    if log_file.is_dir():
        raise UserError(f"hydra.run.dir={run_dir}: {log_file} is a folder where the run's log file goes; "
                        "move it away or choose another hydra.run.dir")


class Preflight(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
            check_config(task)
            check_run_folder(Path(str(OmegaConf.select(config, "hydra.run.dir"))),
                             f"{OmegaConf.select(config, 'hydra.job.name')}.log")
        except UserError as e:
            _refuse(e)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            writable_folder(str(OmegaConf.select(config, "hydra.sweep.dir")), "hydra.sweep.dir")
        except UserError as e:
            _refuse(e)
