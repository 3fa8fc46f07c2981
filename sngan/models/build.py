"""G, D and the EMA of G from a run's config: built fresh, or restored from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sngan import config
from sngan.diagnostics.monitor import layer_input_sizes
from sngan.models.nets import build_discriminator, build_generator
from sngan.run import checkpoint
from sngan.run.errors import UserError, fits_in_memory
from sngan.spectral import apply_spectral_norm
from sngan.training.ema import build_ema


def build_models(cfg: DictConfig, device: torch.device):
    """G, D (normalized by cfg.variant) and the optional EMA of G, on `device`."""
    m = cfg.model
    layout, init = config.setting(cfg, "model.layout"), config.setting(cfg, "model.init")
    widths = f"model.g_ch={m.g_ch} / model.d_ch={m.d_ch}: the models"
    try:
        with fits_in_memory(widths, f"use smaller widths (on {device.type})"):  # widths too large for this machine
            G = build_generator(m.name, resolution=cfg.dataset.resolution, z_dim=m.z_dim, g_ch=m.g_ch, layout=layout,
                                init=init, upsample=config.setting(cfg, "model.upsample"))
            D = build_discriminator(m.name, resolution=cfg.dataset.resolution, d_ch=m.d_ch, layout=layout, init=init,
                                    leaky_slope=config.setting(cfg, "model.leaky_slope"))
            apply_spectral_norm(D, cfg.variant.name, n_power_iterations=cfg.variant.get("n_power_iterations", 1))
            G, D = G.to(device), D.to(device)
    except ValueError as e:  # the builders name the bad value
        raise UserError(f"model: {e}") from None
    ema = None
    if cfg.train.ema_decay > 0:
        ema = build_ema(G, cfg.train.ema_decay)
    return G, D, ema


def load_weights(state: dict, source, G, D, ema) -> None:
    """G, D and the EMA from a checkpoint; weights that do not fit the models its own config
    describes (an edited or mixed-up file) are a UserError naming it and what to pass instead."""
    for name, module, weights in (("G", G, state["G"]), ("D", D, state["D"]),
                                  ("G_ema", ema, state.get("G_ema"))):
        if module is None:
            continue
        try:
            if not isinstance(weights, dict):
                raise TypeError(f"{name} is a {type(weights).__name__}, not a state dict")
            module.load_state_dict(weights)
        except (RuntimeError, TypeError, KeyError) as e:
            detail = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
            raise UserError(f"{source}: its {name} weights do not fit the model its config describes "
                            f"({detail[:160]}); {checkpoint.other_snapshot(Path(str(source)))}") from None


def restore_models(state: dict, device: torch.device, source=None):
    """(config, G, D, EMA or None) of a checkpoint (read from `source`, named in errors), weights
    loaded, on `device`."""
    source = source or "the checkpoint"
    config.check_saved_config(state["config"], source)
    cfg = OmegaConf.create(state["config"])
    G, D, ema = build_models(cfg, device)
    image_shape = (3, cfg.dataset.resolution, cfg.dataset.resolution)
    layer_input_sizes(D, image_shape, device)  # the `operator` variant learns its input size first
    load_weights(state, source, G, D, ema)
    return cfg, G, D, ema
