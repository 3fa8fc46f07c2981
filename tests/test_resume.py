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

from conftest import TINY, compose_config, read_scalars, run_cli
from sngan import checkpoint
from sngan.errors import UserError
from sngan.train import train

QUIET = ["log.sample_every=1000", "log.eval_every=1000", "log.every=2"]


def _state(run_dir):
    return checkpoint.load(run_dir / "checkpoints" / "last.pt")


def assert_identical(a: dict, b: dict) -> None:
    """Every tensor of two checkpoints equal, bit for bit (config and file names aside)."""
    assert a["step"] == b["step"]
    for key in ("G", "D", "G_ema"):
        if a[key] is None:
            assert b[key] is None
            continue
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    for key in ("opt_g", "opt_d"):
        for pid, st in a[key]["state"].items():
            for name, value in st.items():
                assert torch.equal(value, b[key]["state"][pid][name]), f"{key}.{pid}.{name}"
    assert a["sched_g"] == b["sched_g"] and a["data"] == b["data"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def _run(tmp_path, name, overrides):
    cfg = compose_config(TINY + QUIET + list(overrides))
    train(cfg, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("workers,variant", [(0, "reshaped"), (2, "operator"), (0, "naive")])
def test_resume_is_bit_identical(tmp_path, workers, variant):
    common = [f"dataset.num_workers={workers}", f"variant={variant}", "train.ema_decay=0.9",
              "optim.lr_decay=linear", "dataset.size=40"]  # 5 batches an epoch: resume crosses epochs
    straight = _run(tmp_path, "straight", common + ["train.steps=8", "ckpt.every=100"])
    # N steps, then resume to 2N in the same folder (the schedule needs train.steps fixed: linear decay)
    cfg = compose_config(TINY + QUIET + common + ["train.steps=8", "ckpt.every=4"])
    run = tmp_path / "resumed"
    _stop_after(cfg, run, 4)
    assert _state(run)["step"] == 4
    train(compose_config(TINY + QUIET + common + ["train.steps=8", "ckpt.every=4", "resume=true"]), run)
    assert_identical(_state(straight), _state(run))
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


def _stop_after(cfg, run_dir, steps):
    """Run `cfg` but stop it (as a crash would) right after the checkpoint at `steps`."""
    import sngan.train as trainer

    real_save = trainer.checkpoint.save

    class Stop(Exception):
        pass

    def save_then_stop(ckpt_dir, state, keep):
        real_save(ckpt_dir, state, keep=keep)
        if state["step"] == steps:
            raise Stop

    trainer.checkpoint.save = save_then_stop
    try:
        train(cfg, run_dir)
    except Stop:
        pass
    finally:
        trainer.checkpoint.save = real_save


def test_resume_may_lengthen_a_run(tmp_path):
    straight = _run(tmp_path, "straight", ["train.steps=6"])
    run = _run(tmp_path, "run", ["train.steps=3"])
    train(compose_config(TINY + QUIET + ["train.steps=6", "resume=true", "log.every=1"]), run)
    assert_identical(_state(straight), _state(run))


def test_resume_from_another_folder_or_a_file(tmp_path):
    first = _run(tmp_path, "first", ["train.steps=2"])
    for target in (first, first / "checkpoints" / "step_0000002.pt"):
        fork = tmp_path / f"fork-{target.name}"
        train(compose_config(TINY + QUIET + ["train.steps=3", f"resume={target}"]), fork)
        assert _state(fork)["step"] == 3


def test_resume_refuses_a_change_of_maths(tmp_path):
    run = _run(tmp_path, "run", ["train.steps=2"])
    before = (run / "checkpoints" / "last.pt").read_bytes()
    cfg = compose_config(TINY + QUIET + ["train.steps=4", "resume=true", "variant=builtin", "optim.lr=0.1"])
    with pytest.raises(UserError, match=r"optim\.lr, variant\.name"):
        train(cfg, run)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_damaged_last_falls_back_to_the_newest_good_snapshot(tmp_path, caplog):
    run = _run(tmp_path, "run", ["train.steps=4", "ckpt.every=2", "ckpt.keep=2"])
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    train(compose_config(TINY + QUIET + ["train.steps=5", "ckpt.every=2", "resume=true"]), run)
    assert "resuming from the newest good snapshot step_0000004.pt" in caplog.text
    assert _state(run)["step"] == 5


def test_damaged_checkpoint_without_snapshot_is_a_clear_error(tmp_path):
    run = _run(tmp_path, "run", ["train.steps=2", "ckpt.keep=0"])
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(b"not a checkpoint")
    proc = run_cli(TINY + ["train.steps=3", "resume=true", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert proc.returncode != 0 and "last.pt" in proc.stderr and "Traceback" not in proc.stderr
    assert last.read_bytes() == b"not a checkpoint"  # left as it was, for the user to inspect


def test_snapshot_retention(tmp_path):
    run = _run(tmp_path, "run", ["train.steps=6", "ckpt.every=1", "ckpt.keep=2"])
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.pt", "step_0000005.pt", "step_0000006.pt"]


def test_sigkill_at_a_random_moment_then_resume_is_bit_identical(tmp_path):
    """Kill -9 anywhere (checkpoint writes included, ckpt.every=1), resume, and match a straight run."""
    args = TINY + ["log.every=5", "log.sample_every=1000", "log.eval_every=1000", "ckpt.every=1",
                   "train.steps=60"]
    straight = tmp_path / "straight"
    assert run_cli(args + [f"hydra.run.dir={straight}"], cwd=tmp_path).returncode == 0
    run = tmp_path / "killed"
    env_cmd = [sys.executable, "-m", "sngan.train", *args, f"hydra.run.dir={run}"]
    proc = subprocess.Popen(env_cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (run / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(random.Random().uniform(0.0, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint.load(run / "checkpoints" / "last.pt")["step"]
    proc = run_cli(args + ["resume=true", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_identical(_state(straight), _state(run))
    steps = [s for s, _ in read_scalars(run)["loss/d"]]
    assert steps == sorted(set(steps)), f"duplicated TensorBoard steps after a kill at {killed_at}"
    assert not list((run / "checkpoints").glob(".*.tmp"))


@pytest.mark.slow  # many CLI processes: run by `pytest -m slow` (and CI)
def test_resume_true_remembers_the_run_config(tmp_path):
    """`resume=true hydra.run.dir=RUN` alone continues a naive run: the overrides it was started
    with come from its checkpoint; only resumable keys may be given again, with new values."""
    started = TINY + QUIET + ["variant=naive", "seed=3", "optim=C", "ckpt.every=3"]
    straight = tmp_path / "straight"
    assert run_cli(started + ["train.steps=6", f"hydra.run.dir={straight}"], cwd=tmp_path).returncode == 0
    run = tmp_path / "run"
    assert run_cli(started + ["train.steps=3", f"hydra.run.dir={run}"], cwd=tmp_path).returncode == 0
    proc = run_cli(["resume=true", "train.steps=6", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_identical(_state(straight), _state(run))
    assert _state(run)["config"]["variant"]["name"] == "naive" and _state(run)["config"]["seed"] == 3
    recorded = OmegaConf.load(run / ".hydra" / "config.yaml")  # what the run goes on with, not the defaults
    assert recorded.variant.name == "naive" and recorded.seed == 3 and recorded.train.steps == 6

    # an interrupted run (its last checkpoint at step 3), continued by `resume=true hydra.run.dir` alone
    interrupted = tmp_path / "interrupted"
    shutil.copytree(straight, interrupted)
    shutil.copy(interrupted / "checkpoints" / "step_0000003.pt", interrupted / "checkpoints" / "last.pt")
    (interrupted / "checkpoints" / "step_0000006.pt").unlink()
    proc = run_cli(["resume=true", f"hydra.run.dir={interrupted}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout
    assert_identical(_state(straight), _state(interrupted))

    refused = run_cli(["resume=true", "variant=reshaped", "optim.lr=0.01", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "optim.lr, variant.name" in refused.stderr and refused.stderr.count("\n") == 1
    again = run_cli(["resume=auto", "variant=naive", f"hydra.run.dir={run}"], cwd=tmp_path)  # the same value
    assert again.returncode == 0 and "is complete (step 6 of train.steps=6)" in (run / "train.log").read_text()


@pytest.mark.slow
def test_a_second_trainer_on_a_busy_run_folder_stops_at_once(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "sngan.train", *TINY, *QUIET, "train.steps=400", "ckpt.every=5",
                              f"hydra.run.dir={run}"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints" / "last.pt").exists():
            assert time.time() < deadline and first.poll() is None, "the first trainer ended early"
            time.sleep(0.05)
        started = time.time()
        second = run_cli([*TINY, *QUIET, "train.steps=400", "resume=true", f"hydra.run.dir={run}"], cwd=tmp_path)
        assert second.returncode == 2 and time.time() - started < 60
        assert f"is in use by another trainer (pid {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr and second.stderr.count("\n") == 1
    finally:
        first.wait(timeout=600)
    assert first.returncode == 0, first.stderr.read()  # the first one never noticed
    assert _state(run)["step"] == 400
