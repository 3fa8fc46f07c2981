"""Checkpoints and exact resume: bit-identical continuation, kills at any instant, bad checkpoints."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from omegaconf import OmegaConf

from helpers import (NO_SAMPLES, SCALARS_EVERY_2, TINY, assert_identical, last_checkpoint, read_scalars, snapshot,
                     train_tiny)
from sngan.run import checkpoint
from sngan.run.errors import UserError


@pytest.mark.parametrize("workers,variant", [(0, "reshaped"), (2, "operator"), (0, "naive")])
def test_resume_is_bit_identical(tmp_path, workers, variant):
    common = [f"dataset.num_workers={workers}", f"variant={variant}", "train.ema_decay=0.9",
              "optim.lr_decay=linear", "dataset.size=40"]  # 5 batches an epoch: resume crosses epochs
    straight, run = tmp_path / "straight", tmp_path / "resumed"
    train_tiny(straight, [*SCALARS_EVERY_2, *common, "train.steps=8", "ckpt.every=100"])
    # N steps, then resume to 2N in the same folder (the schedule needs train.steps fixed: linear decay)
    _stop_after(run, [*SCALARS_EVERY_2, *common, "train.steps=8", "ckpt.every=4"], 4)
    assert last_checkpoint(run)["step"] == 4
    train_tiny(run, [*SCALARS_EVERY_2, *common, "train.steps=8", "ckpt.every=4", "resume=true"])
    assert_identical(last_checkpoint(straight), last_checkpoint(run))
    steps = [s for s, _ in read_scalars(run)["loss/d"]]
    assert steps == sorted(set(steps)) == [2, 4, 6, 8]
    # The diagnostics' solvers restart cold after a resume (their vectors are never saved with the
    # model): the logged sigmas agree with the uninterrupted run's to the documented tolerances.
    logged, expected = read_scalars(run), read_scalars(straight)
    sigma_tags = [tag for tag in expected if tag.startswith("sigma/")]
    assert any("operator_upper" in tag for tag in sigma_tags)
    for tag in sigma_tags:
        rel = 1e-3 if tag.startswith(("sigma/operator/", "sigma/operator_lower/", "sigma/lipschitz_bound")) \
            and not tag.endswith("_upper") else 1e-6
        for (step, value), (same_step, reference) in zip(logged[tag], expected[tag], strict=True):
            assert step == same_step and value == pytest.approx(reference, rel=rel), (tag, step)


def _stop_after(run_dir, overrides, steps):
    """Train `overrides` into `run_dir`, but stop it (as a crash would) right after the checkpoint at `steps`."""
    real_save = checkpoint.save

    class Stop(Exception):
        pass

    def save_then_stop(ckpt_dir, state, keep):
        real_save(ckpt_dir, state, keep=keep)
        if state["step"] == steps:
            raise Stop

    checkpoint.save = save_then_stop
    try:
        train_tiny(run_dir, overrides)
    except Stop:
        pass
    finally:
        checkpoint.save = real_save


def test_resume_may_lengthen_a_run(tmp_path):
    straight, run = tmp_path / "straight", tmp_path / "run"
    train_tiny(straight, [*SCALARS_EVERY_2, "train.steps=6"])
    train_tiny(run, [*SCALARS_EVERY_2, "train.steps=3"])
    train_tiny(run, [*SCALARS_EVERY_2, "train.steps=6", "resume=true", "log.every=1"])
    assert_identical(last_checkpoint(straight), last_checkpoint(run))


def test_resume_from_another_folder_or_a_file(tmp_path):
    """A fork continues the run it names: its step 3 is a straight 3-step run's, not a new run's."""
    first, straight = tmp_path / "first", tmp_path / "straight"
    train_tiny(first, [*SCALARS_EVERY_2, "train.steps=2"])
    train_tiny(straight, [*SCALARS_EVERY_2, "train.steps=3"])
    for target in (first, first / "checkpoints" / "step_0000002.pt"):
        fork = tmp_path / f"fork-{target.name}"
        train_tiny(fork, [*SCALARS_EVERY_2, "train.steps=3", f"resume={target}"])
        assert_identical(last_checkpoint(straight), last_checkpoint(fork))
        assert [s for s, _ in read_scalars(fork)["loss/d"]] == [3]  # it trained step 3 only


def test_a_fork_into_a_folder_that_holds_another_run_is_refused(tmp_path):
    first, other = tmp_path / "first", tmp_path / "other"
    train_tiny(first, [*SCALARS_EVERY_2, "train.steps=2"])
    train_tiny(other, [*SCALARS_EVERY_2, "train.steps=2", "seed=1"])
    before = snapshot(other)
    with pytest.raises(UserError, match="which already holds another run: choose a new hydra.run.dir"):
        train_tiny(other, [*SCALARS_EVERY_2, "train.steps=3", f"resume={first}"])
    assert snapshot(other) == before


def test_a_run_without_last_pt_continues_from_its_newest_snapshot(tmp_path):
    """last.pt gone (deleted, or a run of an earlier version killed before writing it): resume=true,
    resume=auto and ckpt= all take the newest snapshot, and the run goes on as if nothing happened."""
    straight = tmp_path / "straight"
    train_tiny(straight, [*SCALARS_EVERY_2, "train.steps=6", "ckpt.every=2"])
    for resume in ("true", "auto"):
        run = tmp_path / resume
        train_tiny(run, [*SCALARS_EVERY_2, "train.steps=4", "ckpt.every=2"])
        (run / "checkpoints" / "last.pt").unlink()
        assert checkpoint.locate(run) == run / "checkpoints" / "step_0000004.pt"
        train_tiny(run, [*SCALARS_EVERY_2, "train.steps=6", "ckpt.every=2", f"resume={resume}"])
        assert_identical(last_checkpoint(straight), last_checkpoint(run))


def test_a_damaged_newest_snapshot_falls_back_when_the_folder_chose_it_not_when_named(tmp_path, caplog):
    run = tmp_path / "run"
    train_tiny(run, [*SCALARS_EVERY_2, "train.steps=4", "ckpt.every=2", "ckpt.keep=2"])
    (run / "checkpoints" / "last.pt").unlink()
    newest = run / "checkpoints" / "step_0000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    with pytest.raises(UserError, match="step_0000004.pt is not a readable checkpoint"):
        train_tiny(tmp_path / "fork", [*SCALARS_EVERY_2, "train.steps=5", f"resume={newest}"])
    train_tiny(run, [*SCALARS_EVERY_2, "train.steps=5", "ckpt.every=2", "ckpt.keep=2", "resume=auto"])
    assert "resuming from the newest good snapshot step_0000002.pt" in caplog.text
    assert last_checkpoint(run)["step"] == 5


def test_checkpoints_are_written_last_pt_first(tmp_path, monkeypatch):
    """A kill between the two writes of a save leaves last.pt the newest state, not a snapshot."""
    written = []
    real = checkpoint.atomic_save
    monkeypatch.setattr(checkpoint, "atomic_save", lambda state, path: (written.append(path.name), real(state, path)))
    train_tiny(tmp_path / "run", [*SCALARS_EVERY_2, "train.steps=2", "ckpt.every=1"])
    assert written == ["last.pt", "step_0000001.pt", "last.pt", "step_0000002.pt"]


def test_resume_refuses_a_change_of_maths(tmp_path):
    run = tmp_path / "run"
    train_tiny(run, [*SCALARS_EVERY_2, "train.steps=2"])
    before = (run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(UserError, match=r"optim\.lr, variant\.name"):
        train_tiny(run, [*SCALARS_EVERY_2, "train.steps=4", "resume=true", "variant=builtin", "optim.lr=0.1"])
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_damaged_last_falls_back_to_the_newest_good_snapshot(tmp_path, caplog):
    run = tmp_path / "run"
    train_tiny(run, [*SCALARS_EVERY_2, "train.steps=4", "ckpt.every=2", "ckpt.keep=2"])
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    train_tiny(run, [*SCALARS_EVERY_2, "train.steps=5", "ckpt.every=2", "resume=true"])
    assert "resuming from the newest good snapshot step_0000004.pt" in caplog.text
    assert last_checkpoint(run)["step"] == 5


def test_damaged_checkpoint_without_snapshot_is_a_clear_error(tmp_path):
    run = tmp_path / "run"
    train_tiny(run, [*SCALARS_EVERY_2, "train.steps=2", "ckpt.keep=0"])
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(b"not a checkpoint")
    proc = train_tiny(run, ["train.steps=3", "resume=true"], via="cli")
    assert proc.returncode != 0 and "last.pt" in proc.stderr and "Traceback" not in proc.stderr
    assert last.read_bytes() == b"not a checkpoint"  # left as it was, for the user to inspect


def test_a_checkpoint_gone_from_its_path_is_a_clear_error(tmp_path):
    with pytest.raises(UserError) as info:
        checkpoint.load(tmp_path / "gone.pt")
    assert str(info.value) == (f"no checkpoint at {tmp_path / 'gone.pt'}; give a run folder, or a .pt file in "
                               "its checkpoints/")


def test_snapshot_retention(tmp_path):
    run = tmp_path / "run"
    train_tiny(run, [*SCALARS_EVERY_2, "train.steps=6", "ckpt.every=1", "ckpt.keep=2"])
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.pt", "step_0000005.pt", "step_0000006.pt"]


def _start_until_first_checkpoint(cwd, run, args):
    """Start `python -m sngan.train` into `run`; return it and the moment its first checkpoint appeared."""
    proc = subprocess.Popen([sys.executable, "-m", "sngan.train", *TINY, *args, f"hydra.run.dir={run}"], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.01)
    return proc, time.monotonic()


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_is_bit_identical(tmp_path):
    """Kill -9 anywhere (checkpoint writes included, ckpt.every=1), resume, and match a straight run."""
    args = ["log.every=5", *NO_SAMPLES, "ckpt.every=1", "train.steps=60"]
    straight = tmp_path / "straight"
    proc, started = _start_until_first_checkpoint(tmp_path, straight, args)
    assert proc.wait(timeout=300) == 0
    span = time.monotonic() - started  # from the first checkpoint to the end, on this machine
    run = tmp_path / "killed"
    proc, _ = _start_until_first_checkpoint(tmp_path, run, args)
    time.sleep(random.Random().uniform(0.0, 0.8 * span))  # while it trains, not while it exits
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before the kill"
    killed_at = last_checkpoint(run)["step"]
    proc = train_tiny(run, [*args, "resume=true"], via="cli")
    assert proc.returncode == 0, proc.stderr
    assert_identical(last_checkpoint(straight), last_checkpoint(run))
    steps = [s for s, _ in read_scalars(run)["loss/d"]]
    assert steps == sorted(set(steps)), f"duplicated TensorBoard steps after a kill at {killed_at}"
    assert not list((run / "checkpoints").glob(".*.tmp"))


@pytest.mark.slow  # many CLI processes: run by `pytest -m slow` (and CI)
def test_resume_true_remembers_the_run_config(tmp_path):
    """`resume=true hydra.run.dir=RUN` alone continues a naive run: the overrides it was started
    with come from its checkpoint; only resumable keys may be given again, with new values."""
    started = [*SCALARS_EVERY_2, "variant=naive", "seed=3", "optim=C", "ckpt.every=3"]
    straight = tmp_path / "straight"
    assert train_tiny(straight, started + ["train.steps=6"], via="cli").returncode == 0
    run = tmp_path / "run"
    assert train_tiny(run, started + ["train.steps=3"], via="cli").returncode == 0
    proc = train_tiny(run, ["resume=true", "train.steps=6"], base=[], via="cli")
    assert proc.returncode == 0, proc.stderr
    assert_identical(last_checkpoint(straight), last_checkpoint(run))
    config = last_checkpoint(run)["config"]
    assert config["variant"]["name"] == "naive" and config["seed"] == 3
    recorded = OmegaConf.load(run / ".hydra" / "config.yaml")  # what the run goes on with, not the defaults
    assert recorded.variant.name == "naive" and recorded.seed == 3 and recorded.train.steps == 6

    # an interrupted run (its last checkpoint at step 3), continued by `resume=true hydra.run.dir` alone
    interrupted = tmp_path / "interrupted"
    shutil.copytree(straight, interrupted)
    shutil.copy(interrupted / "checkpoints" / "step_0000003.pt", interrupted / "checkpoints" / "last.pt")
    (interrupted / "checkpoints" / "step_0000006.pt").unlink()
    proc = train_tiny(interrupted, ["resume=true"], base=[], via="cli")
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout
    assert_identical(last_checkpoint(straight), last_checkpoint(interrupted))

    refused = train_tiny(run, ["resume=true", "variant=reshaped", "optim.lr=0.01"], base=[], via="cli")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "optim.lr, variant.name" in refused.stderr and refused.stderr.count("\n") == 1
    again = train_tiny(run, ["resume=auto", "variant=naive"], base=[], via="cli")  # the same value
    assert again.returncode == 0 and "is complete (step 6 of train.steps=6)" in (run / "train.log").read_text()


@pytest.mark.slow
def test_a_second_trainer_on_a_busy_run_folder_stops_at_once(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "sngan.train", *TINY, *SCALARS_EVERY_2, "train.steps=400",
                              "ckpt.every=5", f"hydra.run.dir={run}"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints" / "last.pt").exists():
            assert time.time() < deadline and first.poll() is None, "the first trainer ended early"
            time.sleep(0.05)
        started = time.time()
        second = train_tiny(run, [*SCALARS_EVERY_2, "train.steps=400", "resume=true"], via="cli")
        assert second.returncode == 2 and time.time() - started < 60
        assert f"is in use by another trainer (pid {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr and second.stderr.count("\n") == 1
    finally:
        first.wait(timeout=600)
    assert first.returncode == 0, first.stderr.read()  # the first one never noticed
    assert last_checkpoint(run)["step"] == 400


def test_a_resume_on_a_data_set_of_another_size_is_refused(tmp_path):
    """dataset.root may move (the same images elsewhere), but a data set of another size would
    change every later batch: refused, and the run left as it was."""
    from PIL import Image

    from helpers import TINY_MODEL

    def images(folder, n):
        folder.mkdir()
        for i in range(n):
            Image.new("RGB", (16, 16), (25 * i, 0, 0)).save(folder / f"{i}.png")
        return folder
    common = ["dataset=folder", "metrics.during_training=false", "train.batch_size=4", "log.every=100", *NO_SAMPLES]
    run = tmp_path / "run"
    train_tiny(run, [*common, f"dataset.root={images(tmp_path / 'a', 8)}", "train.steps=2"], base=TINY_MODEL)
    before = snapshot(run)
    with pytest.raises(UserError, match="the data set has 9 images where the run trained on 8"):
        train_tiny(run, [*common, f"dataset.root={images(tmp_path / 'b', 9)}", "train.steps=3", "resume=true"],
                   base=TINY_MODEL)
    assert snapshot(run) == before
    shutil.copytree(tmp_path / "a", tmp_path / "moved")
    train_tiny(run, [*common, f"dataset.root={tmp_path / 'moved'}", "train.steps=3", "resume=true"], base=TINY_MODEL)
    assert last_checkpoint(run)["step"] == 3


def test_a_resume_takes_this_devices_adam_and_the_weights_memory_layout(tmp_path, monkeypatch):
    """A checkpoint of a CUDA run (fused, capturable Adam) resumed on the CPU trains exactly as the
    CPU run's own checkpoint does; and a resume that switches train.channels_last keeps every Adam
    moment in its weight's layout."""
    import sngan.training.setup as setup

    run = tmp_path / "run"
    train_tiny(run, [*SCALARS_EVERY_2, "train.steps=2"])
    as_cuda = tmp_path / "as_cuda"
    shutil.copytree(run, as_cuda)
    state = torch.load(as_cuda / "checkpoints" / "last.pt", weights_only=False)
    for key in ("opt_g", "opt_d"):
        for group in state[key]["param_groups"]:
            group.update(fused=True, capturable=True)
    checkpoint.atomic_save(state, as_cuda / "checkpoints" / "last.pt")
    for folder in (run, as_cuda):
        train_tiny(folder, [*SCALARS_EVERY_2, "train.steps=4", "resume=true"])
    assert_identical(last_checkpoint(run), last_checkpoint(as_cuda))

    layouts = []
    real = setup.match_state_layouts

    def checked(*optimizers):
        real(*optimizers)
        layouts.extend(value.stride() == param.stride() for opt in optimizers for param, st in opt.state.items()
                       for value in st.values() if torch.is_tensor(value) and value.shape == param.shape)
    switched = tmp_path / "switched"
    train_tiny(switched, [*SCALARS_EVERY_2, "train.steps=2", "train.channels_last=true"])
    monkeypatch.setattr(setup, "match_state_layouts", checked)
    train_tiny(switched, [*SCALARS_EVERY_2, "train.steps=3", "resume=true", "train.channels_last=false"])
    assert len(layouts) > 4 and all(layouts)
