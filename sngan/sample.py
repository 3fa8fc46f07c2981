"""Images from a checkpoint: `python -m sngan.sample ckpt=PATH [n=64] [out=grid.png] [seed=0]`.

`out` ending in .png gets one grid; any other `out` is a folder that gets one PNG per image.
The EMA generator is used when the run kept one. `ckpt` may be a run folder or a checkpoint file.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from sngan import checkpoint
from sngan.errors import UserError
from sngan.models import build_generator

USAGE = "usage: python -m sngan.sample ckpt=PATH [n=64] [out=grid.png] [seed=0] [device=cpu]"


def parse_args(argv: list[str], defaults: dict) -> dict:
    """key=value arguments over `defaults`; unknown keys and missing required ones are UserErrors."""
    args = dict(defaults)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise UserError(f"unexpected argument {item!r}; {USAGE}")
        args[key] = value
    missing = [k for k, v in args.items() if v is None]
    if missing:
        raise UserError(f"missing {', '.join(missing)}; {USAGE}")
    return args


def load_generator(ckpt: str, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The run's generator (its EMA when present) in eval mode, and the checkpoint's config."""
    state = checkpoint.load(checkpoint.locate(ckpt))
    cfg = state["config"]
    G = build_generator(cfg["model"]["name"], resolution=cfg["dataset"]["resolution"],
                        z_dim=cfg["model"]["z_dim"], g_ch=cfg["model"]["g_ch"])
    if state.get("G_ema") is not None:  # AveragedModel keys: module.<name>, plus n_averaged
        G.load_state_dict({k[len("module."):]: v for k, v in state["G_ema"].items() if k.startswith("module.")})
    else:
        G.load_state_dict(state["G"])
    return G.to(device).eval(), cfg


@torch.no_grad()
def generate(G: torch.nn.Module, n: int, seed: int, device: str = "cpu", batch: int = 256) -> torch.Tensor:
    """n images in [-1, 1] from z drawn with a private generator seeded by `seed`."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    return torch.cat([G(z[i:i + batch]) for i in range(0, n, batch)]).cpu()


def main(argv: list[str] | None = None) -> None:
    try:
        a = parse_args(sys.argv[1:] if argv is None else argv,
                       {"ckpt": None, "n": "64", "out": "samples.png", "seed": "0", "device": "cpu"})
        n, seed = int(a["n"]), int(a["seed"])
        if n < 1:
            raise UserError(f"n must be a positive integer, got {n}")
        G, _ = load_generator(a["ckpt"], a["device"])
    except ValueError as e:
        sys.exit(f"error: {e}; {USAGE}")
    except UserError as e:
        sys.exit(f"error: {e}")
    images = generate(G, n, seed, a["device"])
    out = Path(a["out"])
    if out.suffix.lower() == ".png":
        out.parent.mkdir(parents=True, exist_ok=True)
        save_image(make_grid(images, nrow=math.ceil(math.sqrt(n)), normalize=True, value_range=(-1, 1)), out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            save_image(image, out / f"{i:06d}.png", normalize=True, value_range=(-1, 1))
    print(f"wrote {n} images to {out}")


if __name__ == "__main__":
    main()
