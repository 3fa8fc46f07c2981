"""Checks a Hydra command passes before Hydra creates anything (a Hydra callback, configs/train.yaml).

Hydra creates the run folder and opens its log file before the task starts; a bad value, or a
run folder that cannot be written (a read-only file system, a path under a file, `/proc`), would
otherwise end in a Hydra traceback or leave an empty run folder behind. A single run is checked
whole here (the values, then the folder); in a sweep each job checks its own values, so that one
bad value fails only its job, and only the sweep folder is checked up front.
"""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sngan.config import check_config
from sngan.run.cli import refuse
from sngan.run.errors import UserError
from sngan.run.paths import writable_folder


CREATED_HERE: set[Path] = set()  # run folders this process's command made: a refusal may remove them


def check_folder_text(value: str, key: str) -> None:
    """Hydra takes `key` as written: empty would put the run in the working directory, and a
    leading `~` (unexpanded inside quotes) would make a folder literally named `~`."""
    if not value.strip():
        raise UserError(f"{key} is empty (an unset shell variable?): name the folder, e.g. {key}=outputs/my_run")
    if value.startswith("~"):
        example = f", e.g. {key}=$HOME{value[1:]} unquoted" if value.startswith("~/") else ""
        raise UserError(f"{key}={value}: Hydra does not expand ~ and would create a folder named ~; write the "
                        f"path out{example}")


def check_run_folder(run_dir: Path, log_name: str) -> None:
    """The run folder can be created and written, and its log file is not a folder."""
    writable_folder(run_dir, "hydra.run.dir")
    log_file = Path(run_dir) / log_name
    if log_file.is_dir():
        raise UserError(f"hydra.run.dir={run_dir}: {log_file} is a folder where the run's log file goes; "
                        "move it away or choose another hydra.run.dir")


def check_resume_target(resume, run_dir: Path, named: bool) -> None:
    """resume=true continues the run in hydra.run.dir: refused before Hydra creates that folder
    when it does not exist (without hydra.run.dir on the command line, the folder is a new dated one)."""
    if resume not in (True, "true") or run_dir.exists():
        return
    if not named:
        raise UserError("resume=true continues the run in hydra.run.dir, and none was given (the default is a new "
                        "dated folder): add hydra.run.dir=RUN_FOLDER, the folder the run's header named")
    raise UserError(f"resume=true: nothing to resume: {run_dir} does not exist; check hydra.run.dir, or run without "
                    "resume to start fresh")


class Preflight(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
            check_config(task)
            run_dir = str(OmegaConf.select(config, "hydra.run.dir"))
            check_folder_text(run_dir, "hydra.run.dir")
            check_resume_target(task.get("resume"), Path(run_dir),  # before check_run_folder creates it
                                named=any(o.startswith("hydra.run.dir=") for o in config.hydra.overrides.hydra))
            if not Path(run_dir).exists():
                CREATED_HERE.add(Path(run_dir).resolve())
            check_run_folder(Path(run_dir), f"{OmegaConf.select(config, 'hydra.job.name')}.log")
        except UserError as e:
            refuse(e)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            sweep_dir = str(OmegaConf.select(config, "hydra.sweep.dir"))
            check_folder_text(sweep_dir, "hydra.sweep.dir")
            writable_folder(sweep_dir, "hydra.sweep.dir")
        except UserError as e:
            refuse(e)
