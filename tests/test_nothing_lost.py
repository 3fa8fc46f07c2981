"""Nothing lost: a full or read-only disk during a run (new or resumed) stops it with one line,
keeps the previous checkpoint whole and loadable and leaves no temporary file; the trainer writes
the .hydra/ records Hydra would; an error inside a data-loader worker reads as the same one line.

The file-system failures are simulated in the writer (these machines run as root, whom chmod
does not stop); where this process may mount a small tmpfs, the same is also shown on a real one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import types

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from helpers import TINY, TINY_MODEL, assert_identical, call, compose_config, last_checkpoint, snapshot, train_tiny
from sngan.run import checkpoint
from sngan.run.errors import UserError

EVERY_2_STEPS = ["log.every=2", "log.sample_every=2", "log.eval_every=2", "ckpt.every=2", "ckpt.keep=2"]


def _fail_the_nth_save(monkeypatch, n: int, error: int = errno.ENOSPC) -> None:
    """torch.save writes part of the file, then the disk is full (or read-only), from call n on."""
    real_save, calls = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] < n:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"\0" * 4096)
        raise OSError(error, os.strerror(error))
    monkeypatch.setattr(checkpoint.torch, "save", save)


def _no_temporary_files(run) -> None:
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".write-test-")]


def test_a_full_disk_stops_a_new_run_and_a_resumed_one_keeping_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    straight = tmp_path / "straight"
    assert train_tiny(straight, EVERY_2_STEPS + ["train.steps=6"], via="main")[0] == 0

    run = tmp_path / "run"
    _fail_the_nth_save(monkeypatch, 3)  # step 2 (last.pt, snapshot) is written; step 4's last.pt is not
    code, printed, _ = train_tiny(run, EVERY_2_STEPS + ["train.steps=6"], via="main", capsys=capsys)
    assert code == 2 and "Traceback" not in printed and printed.strip().count("\n") == 0
    assert printed.startswith(f"error: cannot write {run / 'checkpoints' / 'last.pt'} (No space left on device)")
    assert f"the last checkpoint {run / 'checkpoints' / 'last.pt'} (step 2) is intact" in printed
    assert f"free space on that file system, then continue with resume=true hydra.run.dir={run}" in printed
    assert checkpoint.load(run / "checkpoints" / "last.pt", need=checkpoint.RESUME_KEYS)["step"] == 2
    _no_temporary_files(run)

    # resumed (to a longer schedule), and the disk fills again at its first checkpoint: step 2 is
    # still what is kept, and the folder's records still say how it was made
    records = snapshot(run / ".hydra")
    _fail_the_nth_save(monkeypatch, 1)
    code, printed, _ = train_tiny(run, ["resume=true", "train.steps=8"], base=[], via="main", capsys=capsys)
    assert code == 2 and printed.strip().count("\n") == 0 and "(step 2) is intact" in printed
    assert last_checkpoint(run)["step"] == 2
    assert snapshot(run / ".hydra") == records
    _no_temporary_files(run)

    monkeypatch.undo()  # space again: the run goes on from step 2 as if nothing had happened
    assert train_tiny(run, ["resume=true"], base=[], via="main")[0] == 0
    assert_identical(last_checkpoint(straight), last_checkpoint(run))
    assert "resume=true" in (run / ".hydra" / "overrides.yaml").read_text()  # written once it had a checkpoint


def test_a_full_disk_between_last_pt_and_its_snapshot_keeps_the_newest_step(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _fail_the_nth_save(monkeypatch, 4)  # step 4's last.pt is written, its snapshot is not
    code, printed, _ = train_tiny(run, EVERY_2_STEPS + ["train.steps=6"], via="main", capsys=capsys)
    assert code == 2 and printed.strip().count("\n") == 0
    assert f"the last checkpoint {run / 'checkpoints' / 'last.pt'} (step 4) is intact" in printed
    _no_temporary_files(run)


def test_a_resume_clears_the_outcome_it_no_longer_matches(tmp_path, monkeypatch, capsys):
    """A finished run lengthened, then stopped by a full disk: status.json no longer says `ok` for a
    run whose records now ask for more steps; its logs say where it stands."""
    run = tmp_path / "run"
    assert train_tiny(run, EVERY_2_STEPS + ["train.steps=2"], via="main")[0] == 0
    assert json.loads((run / "status.json").read_text())["status"] == "ok"
    _fail_the_nth_save(monkeypatch, 3)  # the resume writes step 4 (last.pt, snapshot), then fails
    code, _, _ = train_tiny(run, ["resume=true", "train.steps=6"], base=[], via="main", capsys=capsys)
    assert code == 2 and last_checkpoint(run)["step"] == 4
    assert OmegaConf.load(run / ".hydra" / "config.yaml").train.steps == 6
    assert not (run / "status.json").exists()


def test_a_read_only_file_system_mid_run_and_at_the_start(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _fail_the_nth_save(monkeypatch, 3, errno.EROFS)
    code, printed, _ = train_tiny(run, EVERY_2_STEPS + ["train.steps=6"], via="main", capsys=capsys)
    assert code == 2 and "Traceback" not in printed and printed.strip().count("\n") == 0
    assert "(Read-only file system)" in printed and "make the file system writable" in printed
    assert "(step 2) is intact" in printed
    _no_temporary_files(run)
    monkeypatch.undo()

    # the whole folder read-only when a resume starts: refused before anything, the folder as it was
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    import sngan.run.paths
    monkeypatch.setattr(sngan.run.paths, "tempfile", types.SimpleNamespace(mkstemp=read_only))
    before = snapshot(run)
    code, printed, _ = train_tiny(run, ["resume=true"], base=[], via="main", capsys=capsys)
    assert code == 2 and printed.strip() == (f"error: hydra.run.dir={run} cannot be written: {run} "
                                             "(Read-only file system); choose a writable hydra.run.dir")
    assert snapshot(run) == before


class _FillsAfter:
    """A file that takes `room` bytes, then fails as a full disk does: inside torch.save's zip
    writer, which hides the OSError behind a RuntimeError ("unexpected pos ...")."""

    def __init__(self, f, room: int):
        self.f, self.room, self.written = f, room, 0

    def write(self, data) -> int:
        if self.written + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def test_a_disk_that_fills_inside_torch_save_is_the_write_error_naming_the_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"the previous checkpoint")
    with pytest.raises(OSError) as caught:
        checkpoint.atomic_write(path, lambda f: torch.save({"w": torch.zeros(100_000)}, _FillsAfter(f, 50_000)))
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    assert path.read_bytes() == b"the previous checkpoint"
    _no_temporary_files(tmp_path)


def test_ctrl_c_while_a_write_error_is_handled_stays_ctrl_c(tmp_path):
    def write(f):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_write(tmp_path / "last.pt", write)
    _no_temporary_files(tmp_path)


def _mount_tmpfs(where, size: str) -> bool:
    where.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_real_full_then_read_only_tmpfs(tmp_path, capsys):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "8m"):
        pytest.skip("cannot mount a tmpfs here (needs root); the simulated tests above cover the writer")
    try:
        run = disk / "run"
        assert train_tiny(run, EVERY_2_STEPS + ["train.steps=2"], via="main")[0] == 0
        kept = last_checkpoint(run)
        with open(disk / "filler", "wb") as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
        code, printed, _ = train_tiny(run, ["resume=true", "train.steps=4"], base=[], via="main", capsys=capsys)
        assert code == 2 and "Traceback" not in printed and printed.strip().count("\n") == 0
        assert "(No space left on device)" in printed and "(step 2) is intact" in printed
        assert_identical(kept, last_checkpoint(run))
        _no_temporary_files(run)

        (disk / "filler").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        before = snapshot(run)
        code, printed, _ = train_tiny(run, ["resume=true", "train.steps=4"], base=[], via="main", capsys=capsys)
        assert code == 2 and printed.strip().count("\n") == 0 and "(Read-only file system)" in printed
        assert snapshot(run) == before
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_the_trainer_writes_the_records_hydra_would(tmp_path):
    """Hydra's own copy (hydra.output_subdir=.orig) beside the trainer's .hydra/: the same bytes,
    but for the line that says where the records are."""
    run = tmp_path / "run"
    assert train_tiny(run, ["train.steps=1", "hydra.output_subdir=.orig"], via="main")[0] == 0
    for name in ("config.yaml", "overrides.yaml"):
        assert (run / ".hydra" / name).read_text() == (run / ".orig" / name).read_text()
    ours, theirs = ((run / d / "hydra.yaml").read_text().splitlines() for d in (".hydra", ".orig"))
    assert [(a, b) for a, b in zip(ours, theirs) if a != b] == [("  output_subdir: .hydra", "  output_subdir: .orig")]


def test_an_error_in_a_data_loader_worker_is_the_same_one_line(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(7):
        Image.new("RGB", (20, 20), (30 * i, 0, 0)).save(images / f"{i}.png")
    (images / "7.png").write_bytes(b"not an image")  # read in the first epoch, after image 0
    folder = ["dataset=folder", f"dataset.root={images}", "metrics.during_training=false", "train.batch_size=4",
              "train.steps=4", "log.every=100"]
    lines = {}
    for workers in (0, 2):
        code, printed, _ = train_tiny(tmp_path / str(workers), folder + [f"dataset.num_workers={workers}"],
                                      base=TINY_MODEL, via="main", capsys=capsys)
        assert code == 2 and "Traceback" not in printed and printed.strip().count("\n") == 0, printed
        lines[workers] = printed.strip()
    assert lines[0] == lines[2]
    assert lines[0].startswith(f"error: cannot read image {images / '7.png'}")


def test_dataset_alone_brings_its_resolution_and_the_models_widths():
    cfg = compose_config(["dataset=cifar10"])
    assert (cfg.dataset.resolution, cfg.model.g_ch, cfg.model.d_ch, cfg.train.instance_noise) == (32, 512, 64, 0.0)
    cfg = compose_config(["dataset=celeba", "model=resnet"])
    assert (cfg.dataset.resolution, cfg.model.g_ch, cfg.model.d_ch) == (64, 256, 128)
    cfg = compose_config(["dataset=cifar10", "model.g_ch=64"])  # what is set stays set
    assert (cfg.dataset.resolution, cfg.model.g_ch) == (32, 64)
    cfg = compose_config([])  # the embedded run keeps its own sizes
    assert (cfg.dataset.resolution, cfg.model.g_ch, cfg.model.d_ch, cfg.train.instance_noise) == (16, 128, 32, 0.2)


def test_train_refuses_a_data_set_smaller_than_one_batch_by_name(tmp_path):
    with pytest.raises(UserError, match=r"dataset.size must be at least one batch \(train.batch_size=8\), got 4"):
        train_tiny(tmp_path / "run", ["dataset.size=4"])
    assert not (tmp_path / "run").exists()


def test_a_sweep_job_refused_on_a_folder_that_holds_a_run_leaves_it_as_it_was(tmp_path, capsys):
    """Relaunching a sweep (resume=auto) while a job's folder is busy: that job fails, the sweep goes
    on, and the folder, its status.json and .hydra/ included, is as it was."""
    from sngan.run.lock import run_lock

    sweep = tmp_path / "sweep"
    args = ["-m", f"hydra.sweep.dir={sweep}", "resume=auto", *TINY, "train.steps=1", "seed=0,1"]
    assert call("train", args)[0] == 0
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    busy = next(p for p in jobs if "seed=0" in p.name.split(","))
    before = snapshot(busy)
    with run_lock(busy):
        code, err, out = call("train", args, capsys)
    assert code == 0 and "is in use by another trainer" in out + err and "Traceback" not in out + err
    assert snapshot(busy) == before

    # the same while the busy job has written no checkpoint yet: its folder is still left alone
    shutil.rmtree(busy / "checkpoints")
    (busy / "status.json").unlink()
    before = snapshot(busy)
    with run_lock(busy):
        code, err, out = call("train", args, capsys)
    assert code == 0 and "is in use by another trainer" in out + err
    assert snapshot(busy) == before


def test_a_file_system_without_flock_trains_unguarded_with_a_warning(tmp_path, monkeypatch, caplog):
    """NFS mounted nolock, Lustre noflock: flock fails with ENOLCK; the run goes on, and says so."""
    from sngan.run import lock

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(lock.fcntl, "flock", no_locks)
    run = tmp_path / "run"
    train_tiny(run, ["train.steps=1"])
    assert last_checkpoint(run)["step"] == 1
    assert f"cannot lock {run} (No locks available): nothing stops a second trainer" in caplog.text
