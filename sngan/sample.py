"""Images from a checkpoint: `python -m sngan.sample ckpt=PATH [n=64] [out=grid.png] [seed=0]`.

`out` ending in .png gets one grid; any other `out` is a folder that gets one PNG per image.
The EMA generator is used when the run kept one. `ckpt` may be a run folder or a checkpoint file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torchvision.utils import save_image

from sngan import checkpoint, monitor
from sngan.errors import UserError
from sngan.train import restore_models

USAGE = "usage: python -m sngan.sample ckpt=PATH [n=64] [out=grid.png] [seed=0] [device=cpu]"


def parse_args(argv: list[str], defaults: dict, usage: str = USAGE) -> dict:
    """key=value arguments over `defaults`; unknown keys and missing required ones are UserErrors."""
    args = dict(defaults)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise UserError(f"unexpected argument {item!r}; {usage}")
        args[key] = value
    missing = [k for k, v in args.items() if v is None]
    if missing:
        raise UserError(f"missing {', '.join(missing)}; {usage}")
    return args


def positive_int(args: dict, key: str, minimum: int = 1) -> int:
    """args[key] as an integer >= minimum, else a UserError naming the key."""
    try:
        value = int(args[key])
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise UserError(f"{key} must be an integer >= {minimum}, got {args[key]!r}")
    return value


def load_generator(ckpt: str, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The run's generator (its EMA when present) in eval mode, and the checkpoint's config."""
    cfg, G, _, ema = restore_models(checkpoint.load(checkpoint.locate(ckpt)), torch.device(device))
    return (ema.module if ema is not None else G).eval(), cfg


def generate(G: torch.nn.Module, n: int, seed: int, device: str = "cpu") -> torch.Tensor:
    """n images in [-1, 1] from z drawn with a private generator seeded by `seed`."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    return monitor.generate(G, z).cpu()


def main(argv: list[str] | None = None) -> None:
    try:
        a = parse_args(sys.argv[1:] if argv is None else argv,
                       {"ckpt": None, "n": "64", "out": "samples.png", "seed": "0", "device": "cpu"})
        n, seed = positive_int(a, "n"), positive_int(a, "seed", minimum=0)
        G, _ = load_generator(a["ckpt"], a["device"])
    except UserError as e:
        sys.exit(f"error: {e}")
    images = generate(G, n, seed, a["device"])
    out = Path(a["out"])
    if out.suffix.lower() == ".png":
        out.parent.mkdir(parents=True, exist_ok=True)
        monitor.save_grid(images, out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            save_image(image, out / f"{i:06d}.png", normalize=True, value_range=(-1, 1))
    print(f"wrote {n} images to {out}")


if __name__ == "__main__":
    main()
