"""Up-front checks of a composed training config, so that bad values fail before any work."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig

from sngan.errors import UserError
from sngan.models import INITS, LAYOUTS, UPSAMPLING


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _positive_int(cfg: DictConfig, key: str) -> None:
    value = cfg
    for part in key.split("."):
        value = value[part]
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
             f"{key} must be a positive integer, got {value!r}")


def check_config(cfg: DictConfig) -> None:
    """Raise UserError (one line, naming the key) for any value the run cannot use."""
    for key in ("train.steps", "train.batch_size", "train.n_dis", "model.g_ch", "model.d_ch",
                "model.z_dim", "dataset.resolution", "log.every", "log.sample_every",
                "log.eval_every", "log.n_eval", "ckpt.every"):
        _positive_int(cfg, key)
    _require(isinstance(cfg.ckpt.keep, int) and cfg.ckpt.keep >= 0,
             f"ckpt.keep must be an integer >= 0, got {cfg.ckpt.keep!r}")
    _require(isinstance(cfg.dataset.num_workers, int) and cfg.dataset.num_workers >= 0,
             f"dataset.num_workers must be an integer >= 0, got {cfg.dataset.num_workers!r}")
    lr = cfg.optim.lr
    _require(isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0,
             f"optim.lr must be a positive finite number, got {lr!r}")
    for key in ("beta1", "beta2"):
        beta = cfg.optim[key]
        _require(isinstance(beta, (int, float)) and 0 <= beta < 1,
                 f"optim.{key} must be in [0, 1), got {beta!r}")
    _require(cfg.optim.lr_decay in ("none", "linear"),
             f"optim.lr_decay must be none or linear, got {cfg.optim.lr_decay!r}")
    decay = cfg.train.ema_decay
    _require(isinstance(decay, (int, float)) and 0 <= decay < 1,
             f"train.ema_decay must be in [0, 1) (0 = off), got {decay!r}")
    noise = cfg.train.instance_noise
    _require(isinstance(noise, (int, float)) and not isinstance(noise, bool) and math.isfinite(noise) and noise >= 0,
             f"train.instance_noise must be a finite number >= 0, got {noise!r}")
    for key in ("amp", "compile", "channels_last", "cudnn_benchmark"):
        _require(isinstance(cfg.train[key], bool), f"train.{key} must be true or false, got {cfg.train[key]!r}")
    check_model_and_batch_keys(cfg)
    _require(cfg.device in ("auto", "cpu", "cuda") or str(cfg.device).startswith("cuda:"),
             f"device must be auto, cpu or cuda, got {cfg.device!r}")


def check_model_and_batch_keys(cfg: DictConfig) -> None:
    """model.layout, model.init, model.leaky_slope, model.upsample, train.g_batch_size, dataset.crop.
    Each may be absent (a config saved before it existed): absent counts as its default."""
    m = cfg.model
    layout = m.get("layout", "paper_table")
    _require(layout in LAYOUTS, f"model.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    init = m.get("init")
    _require(init is None or init in INITS, f"model.init must be one of {', '.join(INITS)} or null "
             f"(the layout's), got {init!r}")
    slope = m.get("leaky_slope")
    _require(slope is None or (isinstance(slope, (int, float)) and not isinstance(slope, bool) and 0 <= slope < 1),
             f"model.leaky_slope must be a number in [0, 1) or null (the layout's), got {slope!r}")
    upsample = m.get("upsample", "nearest")
    _require(upsample in UPSAMPLING, f"model.upsample must be one of {', '.join(UPSAMPLING)}, got {upsample!r}")
    g_batch = cfg.train.get("g_batch_size")
    _require(g_batch is None or (isinstance(g_batch, int) and not isinstance(g_batch, bool) and g_batch >= 1),
             f"train.g_batch_size must be a positive integer or null (= train.batch_size), got {g_batch!r}")
    crop = cfg.dataset.get("crop", 140)
    _require(isinstance(crop, int) and not isinstance(crop, bool) and crop >= 1,
             f"dataset.crop must be a positive integer, got {crop!r}")


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda when available, else cpu; asking for cuda without one is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)
