"""What a run says about itself: a header at its start and a footer at its end, on the console and
in train.log, with the exact commands that continue, sample and evaluate it."""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sngan.config import KEYS, setting

log = logging.getLogger("sngan.train")


class ConsoleFormatter(logging.Formatter):
    """Plain messages on the console; WARNING and above say so (train.log keeps time and level)."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname}: {message}"


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it lies below it (shorter commands)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _hydra_arg(key: str, path: Path) -> str:
    """`key=path` as one shell word that Hydra reads back as this path: sweep folders are named
    like `seed=0,variant=naive`, and an unquoted comma would make a sweep."""
    value = _shown(path)
    if any(c in value for c in ",=()[]{}'\" :"):
        value = '"' + value.replace('"', '\\"') + '"'
    return shlex.quote(f"{key}={value}")


def resume_command(run_dir: Path, overrides: tuple[str, ...] = ()) -> str:
    return " ".join(["python -m sngan.train resume=true", _hydra_arg("hydra.run.dir", run_dir), *overrides])


def commands(run_dir: Path, lengthens: bool = True) -> dict[str, str]:
    """The commands that go on with the run (`lengthens`: its train.steps may grow on resume)."""
    ckpt = shlex.quote(f"ckpt={_shown(run_dir)}")  # sample/evaluate split at the first '=' only
    return {"tensorboard": f"tensorboard --logdir {shlex.quote(_shown(run_dir))}",
            "resume": resume_command(run_dir) + ("   # [train.steps=N to lengthen]" if lengthens else ""),
            "sample": f"python -m sngan.sample {ckpt} n=64 out=samples.png",
            "evaluate": f"python -m sngan.evaluate {ckpt}"}


def after_interrupt(run_dir: Path, overrides: list[str], sweep_dir: Path | None = None) -> str:
    """How to go on after Ctrl-C (the checkpoints are whole: atomic writes)."""
    if sweep_dir is not None:
        return (f"relaunch the sweep with the same arguments and resume=auto "
                f"{_hydra_arg('hydra.sweep.dir', sweep_dir)}: finished runs are skipped, the others continue "
                "from their last checkpoint")
    from sngan.run.checkpoint import holds_run  # here: checkpoint imports this module

    if not holds_run(run_dir):
        return "no checkpoint was written yet, nothing is kept: run the same command again to start over"
    again = tuple(shlex.quote(o) for o in overrides if not o.startswith(("resume=", "hydra.")))  # train.steps=N too
    return f"continue with {resume_command(run_dir, again)}"


def restart_command(run_dir: Path) -> str:
    """The command that trains a run again from scratch, in a new folder beside it: its own
    overrides (.hydra/overrides.yaml) when the folder still has them."""
    overrides, settings = [], "[the run's settings]"
    try:
        saved = OmegaConf.to_container(OmegaConf.load(Path(run_dir) / ".hydra" / "overrides.yaml"))
        given = [o for o in saved if isinstance(o, str)]
        if any(o.startswith("resume=") and o not in ("resume=auto", "resume=false") for o in given):
            settings = f"[the settings in {Path(run_dir) / '.hydra' / 'config.yaml'}]"  # a resume's, not the run's
        else:
            overrides = [o for o in given if not o.startswith(("resume=", "hydra.run.dir="))]
    except Exception:  # no records, or unreadable ones: the command without the run's settings
        pass
    words = [shlex.quote(o) for o in overrides] or [settings]
    again = Path(str(run_dir).rstrip("/") + "-again")
    return f"python -m sngan.train {' '.join(words)} {_hydra_arg('hydra.run.dir', again)}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _millions(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f}M"


# The resumable switches that are off unless asked for: the header names those that are on.
SWITCHES = tuple(key.split(".")[1] for key, spec in KEYS.items()
                 if key.startswith("train.") and spec.resumable and spec.has_default and spec.default is False)


def header(cfg: DictConfig, run_dir: Path, G, D, device: torch.device, start: int) -> list[str]:
    t, o, res = cfg.train, cfg.optim, cfg.dataset.resolution
    where = f"resumed at step {start}" if start else "new run"
    layout = setting(cfg, "model.layout")
    model = cfg.model.name + ("" if layout == "paper_table" else f" ({layout} layout)")
    g_batch = f" ({t.g_batch_size} fakes per G update)" if t.g_batch_size not in (None, t.batch_size) else ""
    lines = [f"sngan run ({where}): {_shown(run_dir)}",
             f"  variant {cfg.variant.name} | data {cfg.dataset.name} {res}x{res} | model {model}: "
             f"G {_millions(G)}, D {_millions(D)} parameters | loss {cfg.loss.name} | seed {cfg.seed}",
             f"  {t.steps} steps, batch {t.batch_size}{g_batch}, n_dis {t.n_dis}, lr {o.lr:g}, "
             f"betas ({o.beta1:g}, {o.beta2:g})"
             f" | {device}, {_count(torch.get_num_threads(), 'thread')} (of {os.cpu_count()} cores)"
             + "".join(f", train.{name}" for name in SWITCHES if t[name]),
             f"  in the run folder: TensorBoard logs every {cfg.log.every} steps, checkpoints/ every "
             f"{cfg.ckpt.every}, samples/ every {cfg.log.sample_every}, train.log"]
    lines += [f"  {name + ':':13s}{command}" for name, command in commands(run_dir, o.lr_decay != "linear").items()]
    return lines


def footer(step: int, final: dict[str, float], health_summary: str, run_dir: Path, lengthens: bool = True,
           chain: bool = True) -> list[str]:
    """`chain`: D is a plain chain of layers (the CNN), whose product of layer norms bounds its
    Lipschitz constant; otherwise (the ResNet) the product is only a summary and is named so."""
    shown = {"metrics/clean_rate": "clean_rate", "metrics/modes_covered": "modes covered", "metrics/fid": "FID",
             "metrics/isc": "IS", "metrics/kid": "KID",
             "sigma/lipschitz_bound": "Lipschitz bound" if chain else "product of layer norms (no bound here)",
             "sigma/lipschitz_bound_upper": "certified bound", "loss/d": "loss/d", "loss/g": "loss/g"}
    numbers = ", ".join(f"{label} {final[tag]:.4g}" for tag, label in shown.items() if tag in final)
    lines = [f"done at step {step}: {numbers}", health_summary]
    lines += [f"  {name + ':':13s}{command}" for name, command in commands(run_dir, lengthens).items()]
    return lines


def hparams_of(cfg: DictConfig) -> dict:
    """The settings shown in TensorBoard's HPARAMS tab."""
    return {"variant": cfg.variant.name, "dataset": cfg.dataset.name, "model": cfg.model.name,
            "loss": cfg.loss.name, "lr": float(cfg.optim.lr), "beta1": float(cfg.optim.beta1),
            "beta2": float(cfg.optim.beta2), "n_dis": cfg.train.n_dis, "seed": cfg.seed,
            "batch_size": cfg.train.batch_size, "layout": setting(cfg, "model.layout")}


def console_only(level: int, message: str) -> None:
    """Log on the console but not in the run folder's train.log."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.handle(record)
