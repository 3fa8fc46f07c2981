"""Images from a checkpoint: `python -m sngan.sample ckpt=PATH [n=64] [out=samples.png] [seed=0]`.

Writes n images of the run's generator (its EMA when the run kept one): `out` ending in .png gets
one grid, labelled with the checkpoint's step; any other `out` is a folder that gets one PNG per
image. `ckpt` may be a run folder or a checkpoint file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torchvision.utils import save_image

from sngan import checkpoint, monitor
from sngan.cli import parse_args, positive_int
from sngan.errors import UserError
from sngan.train import restore_models

USAGE = "usage: python -m sngan.sample ckpt=PATH [n=64] [out=samples.png] [seed=0] [device=cpu]"
OPTIONS = {
    "ckpt": (None, "a run folder (its checkpoints/last.pt) or a checkpoint file"),
    "n": ("64", "number of images"),
    "out": ("samples.png", "a .png file gets one grid; any other path is a folder of one PNG per image"),
    "seed": ("0", "seed of the latent vectors z (a private RNG)"),
    "device": ("cpu", "cpu, cuda or cuda:N"),
}


def load_generator(ckpt: str, device: str = "cpu") -> tuple[torch.nn.Module, dict, int]:
    """The run's generator (its EMA when present) in eval mode, the checkpoint's config and step."""
    state = checkpoint.load(checkpoint.locate(ckpt))
    cfg, G, _, ema = restore_models(state, torch.device(device))
    return (ema.module if ema is not None else G).eval(), cfg, state["step"]


def generate(G: torch.nn.Module, n: int, seed: int, device: str = "cpu") -> torch.Tensor:
    """n images in [-1, 1] from z drawn with a private generator seeded by `seed`."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    return monitor.generate(G, z).cpu()


def main(argv: list[str] | None = None) -> None:
    try:
        a = parse_args(sys.argv[1:] if argv is None else argv, OPTIONS, USAGE, __doc__.split("\n\n")[1])
        n, seed = positive_int(a, "n"), positive_int(a, "seed", minimum=0)
        G, _, step = load_generator(a["ckpt"], a["device"])
    except UserError as e:
        sys.exit(f"error: {e}")
    images = generate(G, n, seed, a["device"])
    out = Path(a["out"])
    if out.suffix.lower() == ".png":
        out.parent.mkdir(parents=True, exist_ok=True)
        monitor.save_grid(images, out, label=f"step {step}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            save_image(image, out / f"{i:06d}.png", normalize=True, value_range=(-1, 1))
    print(f"wrote {n} images to {out}")


if __name__ == "__main__":
    main()
