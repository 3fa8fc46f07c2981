"""The run folder's `.hydra/` records, written by the trainer itself once its checks have passed.

Hydra would write `.hydra/config.yaml`, `hydra.yaml` and `overrides.yaml` before the task starts,
so a command refused against an existing run (no `resume=true`, a changed setting, a missing data
set) would rewrite the records of a run whose checkpoints still say otherwise. `hydra.output_subdir`
is null in configs/train.yaml, and the trainer writes the same three files, with the contents
Hydra gives them, only for a new run or an accepted resume (config.yaml then holds the config the
run goes on with). Tools read them as before (scripts/compare_variants.py).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sngan.checkpoint import atomic_write_text

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
