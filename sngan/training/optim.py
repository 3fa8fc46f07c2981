"""The optimizers: Adam for G and D with their learning-rate schedules, on any device."""

from __future__ import annotations

import torch
from omegaconf import DictConfig


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


# Adam's implementation switches: chosen for the device the run trains on, not kept from the checkpoint.
_IMPLEMENTATION = ("fused", "capturable", "foreach")


def for_this_device(opt: torch.optim.Optimizer, saved: dict) -> dict:
    """A saved optimizer state whose param groups take `opt`'s own implementation switches (built
    for this run's device): a CUDA run's fused, capturable Adam resumed on the CPU, or the reverse,
    would otherwise keep the other device's kernels (load_state_dict restores them with the rest)."""
    groups = [{**group, **{k: opt.defaults[k] for k in _IMPLEMENTATION if k in opt.defaults}}
              for group in saved["param_groups"]]
    return {**saved, "param_groups": groups}


def match_state_layouts(*optimizers: torch.optim.Optimizer) -> None:
    """Each optimizer state tensor in its parameter's memory layout: a resume that switches
    train.channels_last converts the weights after their Adam moments were loaded in the saved
    layout (a fused kernel pairs entries by memory position)."""
    for opt in optimizers:
        for param, state in opt.state.items():
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param).copy_(value)


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
