"""`python -m sngan.sample` on a checkpoint from a short run."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from helpers import QUIET, call, run_cli, train_tiny
from sngan.sample import generate, load_generator


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    train_tiny(run, ["train.steps=3", "train.ema_decay=0.5", *QUIET])
    return run


def test_grid_and_folder_outputs(run_dir, tmp_path):
    proc = run_cli([f"ckpt={run_dir}", "n=9", f"out={tmp_path / 'grid.png'}"], cwd=tmp_path, module="sngan.sample")
    assert proc.returncode == 0, proc.stderr
    width, height = Image.open(tmp_path / "grid.png").size
    # 3x3 tiles of 16 px enlarged 4x to 64 px (nearest neighbour), 8 px padding, a 16 px label strip
    assert (width, height) == (3 * 64 + 4 * 8, 16 + 3 * 64 + 4 * 8)
    proc = run_cli([f"ckpt={run_dir / 'checkpoints' / 'last.pt'}", "n=5", f"out={tmp_path / 'imgs'}"],
                   cwd=tmp_path, module="sngan.sample")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == [f"{i:06d}.png" for i in range(5)]


def test_an_out_that_would_mix_or_misname_samples_is_refused(run_dir, tmp_path, capsys):
    folder = tmp_path / "imgs"
    assert call("sample", [f"ckpt={run_dir}", "n=3", f"out={folder}"], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, err, _ = call("sample", [f"ckpt={run_dir}", "n=2", "seed=1", f"out={folder}"], capsys)
    assert code == 2 and f"out={folder} already holds sample images (000000.png, ...) of an earlier call" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    code, err, _ = call("sample", [f"ckpt={run_dir}", f"out={tmp_path / 'grid.jpg'}"], capsys)
    assert code == 2 and f"a grid is written as PNG: pass out={tmp_path / 'grid.png'}" in err
    assert not (tmp_path / "grid.jpg").exists()


@pytest.mark.parametrize("entry", ["sample", "audit"])
def test_a_checkpoint_this_user_may_not_read_is_not_called_damaged(run_dir, capsys, monkeypatch, entry):
    """Permissions (simulated: these machines run as root) are not damage: no 'the run must start again'."""
    def load(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(torch, "load", load)
    code, err, _ = call(entry, [f"ckpt={run_dir}" if entry == "sample" else str(run_dir)], capsys)
    assert code != 0 and "Traceback" not in err and err.strip().count("\n") == 0
    assert f"{run_dir / 'checkpoints' / 'last.pt'} cannot be read (Permission denied): fix its permissions" in err
    assert "must start again" not in err


def test_a_disk_that_fills_while_writing_a_grid_keeps_the_earlier_one(run_dir, tmp_path, capsys, monkeypatch):
    import errno

    import torchvision.utils

    out = tmp_path / "samples.png"
    assert call("sample", [f"ckpt={run_dir}", "n=4", f"out={out}"], capsys)[0] == 0
    before = out.read_bytes()

    def save_image(grid, f, format=None):  # part of the file, then the disk is full
        f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torchvision.utils, "save_image", save_image)
    code, err, _ = call("sample", [f"ckpt={run_dir}", "n=4", "seed=1", f"out={out}"], capsys)
    assert code != 0 and "Traceback" not in err and f"{out} (No space left on device)" in err
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["samples.png"]


def test_uses_the_ema_generator(run_dir):
    G, _, step = load_generator(str(run_dir))
    assert step == 3
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    ema_weight = state["G_ema"]["module.fc.weight"]
    assert torch.equal(G.fc.weight, ema_weight) and not torch.equal(G.fc.weight, state["G"]["fc.weight"])
    assert torch.equal(generate(G, 4, seed=1), generate(G, 4, seed=1))


@pytest.mark.parametrize("args,message", [([], "missing ckpt"), (["ckpt=/nonexistent"], "does not exist"),
                                          (["ckpt=x", "colour=red"], "unexpected argument")])
def test_bad_arguments(capsys, args, message):
    code, err, _ = call("sample", args, capsys)  # its main, in this process; test_bad_input runs real commands
    assert code != 0 and message in err and "Traceback" not in err


@pytest.mark.parametrize("module", ["sngan.sample", "sngan.evaluate"])
def test_help_lists_every_key_with_its_default(tmp_path, module):
    proc = run_cli(["--help"], cwd=tmp_path, module=module)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: python -m {module} ckpt=PATH")
    assert "ckpt=CKPT" in proc.stdout and "(required)" in proc.stdout
    for key in (["n=64", "out=samples.png", "seed=0", "device=cpu"] if module == "sngan.sample"
                else ["n=10000", "seed=run", "device=cpu", "metrics.inception_weights="]):
        assert key in proc.stdout, key
