"""Images from a checkpoint: `python -m sngan.sample ckpt=PATH [n=64] [out=samples.png] [seed=0]`.

Writes n images of the run's generator (its EMA when the run kept one): `out` ending in .png gets
one grid, labelled with the checkpoint's step; any other `out` is a folder that gets one PNG per
image. `ckpt` may be a run folder or a checkpoint file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from sngan.run import checkpoint
from sngan.diagnostics import monitor
from sngan.run.cli import parse_args, refuse
from sngan.config import KEYS, integer, resolve_device, seed, text
from sngan.run.errors import UserError, describe_os_error, fits_in_memory
from sngan.run.paths import writable_file, writable_folder
from sngan.models import restore_models

USAGE = "usage: python -m sngan.sample ckpt=PATH [n=64] [out=samples.png] [seed=0] [device=cpu]"
OPTIONS = {
    "ckpt": (None, "a run folder (its checkpoints/last.pt) or a checkpoint file", text(what="a path")),
    "n": ("64", "number of images", integer(1)),
    "out": ("samples.png", "a .png file gets one grid; any other path is a folder of one PNG per image",
            text(what="a path")),
    "seed": ("0", "seed of the latent vectors z (a private RNG)", seed()),
    "device": ("cpu", "auto, cpu, cuda or cuda:N", KEYS["device"]),
}


def load_generator(ckpt: str, device: str = "cpu") -> tuple[torch.nn.Module, dict, int]:
    """The run's generator (its EMA when present) in eval mode, the checkpoint's config and step."""
    path = checkpoint.locate(ckpt)
    state = checkpoint.load(path)
    cfg, G, _, ema = restore_models(state, resolve_device(device), source=path)
    return (ema.module if ema is not None else G).eval(), cfg, state["step"]


def generate(G: torch.nn.Module, n: int, seed: int, device: str = "cpu") -> torch.Tensor:
    """n images in [-1, 1] from z drawn with a private generator seeded by `seed`."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    return monitor.generate(G, z).cpu()


def write_images(images: torch.Tensor, out: Path, step: int) -> None:
    if out.suffix.lower() == ".png":
        monitor.save_grid(images, out, label=f"step {step}")
    else:
        from torchvision.utils import save_image  # here: importing torchvision takes seconds

        for i, image in enumerate(images):
            save_image(image, out / f"{i:06d}.png", normalize=True, value_range=(-1, 1))


OTHER_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp")


def check_out(out: Path) -> None:
    """A .png grid file, or a folder for one PNG per image that holds none from an earlier call
    (mixed with them, the folder would hold two sets of samples)."""
    if out.suffix.lower() in OTHER_IMAGE_SUFFIXES:
        raise UserError(f"out={out}: a grid is written as PNG: pass out={out.with_suffix('.png')}, or a folder "
                        "name without an image suffix for one PNG per image")
    if out.suffix.lower() == ".png":
        writable_file(out, "out")
        return
    if out.is_dir() and any(out.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png")):
        raise UserError(f"out={out} already holds sample images (000000.png, ...) of an earlier call: choose a "
                        "new folder, or remove them first")
    writable_folder(out, "out")


def main(argv: list[str] | None = None) -> None:
    try:
        a = parse_args(sys.argv[1:] if argv is None else argv, OPTIONS, USAGE, __doc__.split("\n\n")[1])
        G, _, step = load_generator(a["ckpt"], a["device"])
        out = Path(a["out"]).expanduser()  # checked before generating: a grid file, or a folder of images
        check_out(out)
        with fits_in_memory(f"n={a['n']} images", "ask for fewer, in several calls with different seed= if need be"):
            images = generate(G, a["n"], a["seed"], resolve_device(a["device"]))
        try:
            write_images(images, out, step)
        except OSError as e:  # the disk filled up meanwhile
            raise UserError(f"out={out}: cannot write {describe_os_error(e)}; free space or choose another out") from None
    except UserError as e:
        refuse(e)
    print(f"wrote {a['n']} images to {out}")


if __name__ == "__main__":
    main()
