"""`python -m sngan.sample` on a checkpoint from a short run."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from conftest import TINY, compose_config, run_cli
from sngan.sample import generate, load_generator
from sngan.train import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    train(compose_config(TINY + ["train.steps=3", "train.ema_decay=0.5", "log.every=1000",
                                 "log.sample_every=1000", "log.eval_every=1000"]), run)
    return run


def test_grid_and_folder_outputs(run_dir, tmp_path):
    proc = run_cli([f"ckpt={run_dir}", "n=9", f"out={tmp_path / 'grid.png'}"], cwd=tmp_path, module="sngan.sample")
    assert proc.returncode == 0, proc.stderr
    width, height = Image.open(tmp_path / "grid.png").size
    assert (width, height) == (3 * 16 + 4 * 2, 3 * 16 + 4 * 2)  # 3x3 tiles of 16 px, 2 px padding
    proc = run_cli([f"ckpt={run_dir / 'checkpoints' / 'last.pt'}", "n=5", f"out={tmp_path / 'imgs'}"],
                   cwd=tmp_path, module="sngan.sample")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == [f"{i:06d}.png" for i in range(5)]


def test_uses_the_ema_generator(run_dir):
    G, _ = load_generator(str(run_dir))
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    ema_weight = state["G_ema"]["module.fc.weight"]
    assert torch.equal(G.fc.weight, ema_weight) and not torch.equal(G.fc.weight, state["G"]["fc.weight"])
    assert torch.equal(generate(G, 4, seed=1), generate(G, 4, seed=1))


@pytest.mark.parametrize("args,message", [([], "missing ckpt"), (["ckpt=/nonexistent"], "does not exist"),
                                          (["ckpt=x", "colour=red"], "unexpected argument")])
def test_bad_arguments(tmp_path, args, message):
    proc = run_cli(args, cwd=tmp_path, module="sngan.sample")
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
