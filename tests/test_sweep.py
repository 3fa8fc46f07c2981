"""Sweeps on real Hydra launchers: kill and relaunch, failed jobs recorded, bad sweeps refused."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import CONFIGS, NO_SAMPLES, TINY, read_scalars, run_cli, run_script


def _status(run):
    return json.loads((run / "status.json").read_text())


def _job(sweep, override):
    """The job folder of `override`: Hydra names each one by its sorted overrides (a,b=1,c=2)."""
    found = [p for p in sweep.iterdir() if p.is_dir() and override in p.name.split(",")]
    assert len(found) == 1, (override, sorted(p.name for p in sweep.iterdir()))
    return found[0]


@pytest.mark.slow
def test_a_killed_sweep_relaunched_finishes_every_run_once(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1", f"hydra.sweep.dir={sweep}", "resume=auto",
            *TINY, *NO_SAMPLES, "train.steps=150", "log.every=5", "ckpt.every=5", "seed=0,1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sngan.train", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # the jobs run one after the other: kill the sweep once the second has a checkpoint
        deadline = time.time() + 240
        while not list(sweep.glob("*seed=1*/checkpoints/last.pt")):
            assert time.time() < deadline and proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its worker processes
        proc.wait()
    first, second = _job(sweep, "seed=0"), _job(sweep, "seed=1")
    assert _status(first) == {"status": "ok", "step": 150, "first_warning_step": None}
    assert not (second / "status.json").exists()
    done = {p.name: p.stat().st_mtime_ns for p in [*first.glob("events.*"), *(first / "checkpoints").iterdir()]}

    again = run_cli(args, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in [*first.glob("events.*"), *(first / "checkpoints").iterdir()]} == done
    assert "is complete (step 150 of train.steps=150): nothing to do" in (first / "train.log").read_text()
    assert "resumed from" in (second / "train.log").read_text()
    assert _status(second)["status"] == "ok" and _status(second)["step"] == 150
    steps = [s for s, _ in read_scalars(second)["loss/d"]]
    assert steps == list(range(5, 151, 5))  # every logged step once: nothing trained twice


@pytest.mark.slow  # many CLI processes: run by `pytest -m slow` (and CI)
def test_failed_and_diverged_jobs_are_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "hydra/launcher=joblib", f"hydra.sweep.dir={sweep}", *TINY, *NO_SAMPLES, "variant=none",
                    "log.every=2", "train.steps=4", "optim.lr=-1,1e30,0.001"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    assert "ERROR: optim.lr must be a positive finite number, got -1" in output and "Traceback" not in output
    assert _status(_job(sweep, "optim.lr=-1")) == {"status": "failed",
                                                   "reason": "optim.lr must be a positive finite number, got -1"}
    diverged = _status(_job(sweep, "optim.lr=1e+30"))
    assert diverged["status"] == "diverged" and diverged["step"] == 2 and "non-finite loss" in diverged["reason"]
    assert _status(_job(sweep, "optim.lr=0.001"))["status"] == "ok"
    report = run_script("compare_variants.py", ["--collect", sweep, "--out", tmp_path / "report"], timeout=300)
    assert report.returncode == 0, report.stderr
    assert "failed run" in report.stderr and "got -1" in report.stderr
    with open(tmp_path / "report" / "runs.csv") as f:
        assert sorted(row["status"] for row in csv.DictReader(f)) == ["diverged", "failed", "ok"]


@pytest.mark.parametrize("override,named", [("variant=naive,bogus", "variant/bogus"),
                                            ("optim=E,Z", "optim/Z"), ("train.stepz=1,2", "stepz")])
def test_a_sweep_over_something_that_does_not_exist_starts_nothing(tmp_path, override, named):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "hydra/launcher=joblib", f"hydra.sweep.dir={sweep}", *TINY, override], cwd=tmp_path)
    assert proc.returncode != 0 and named in proc.stderr and "Traceback" not in proc.stderr
    assert not [p for p in sweep.glob("*") if p.is_dir()] if sweep.exists() else True  # no job folder


def test_the_slurm_preset_makes_a_valid_sbatch_script(tmp_path, monkeypatch):
    """No SLURM here: run the real launcher up to the point where submitit would call sbatch."""
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    captured = {}

    def no_submission(executor, *args):
        captured["script"] = executor._executor._make_submission_file_text("python -m sngan.train", "UID")
        raise RuntimeError("stop before sbatch")

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", no_submission)
    fake_bin = tmp_path / "bin"  # submitit looks for srun on PATH before it builds anything
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True,
                      overrides=["hydra/launcher=sngan_slurm", f"hydra.sweep.dir={tmp_path}",
                                 "hydra.launcher.partition=gpu"])
    HydraConfig.instance().set_config(cfg)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    with pytest.raises(RuntimeError, match="stop before sbatch"):
        launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)
    script = captured["script"]
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --time=240", "#SBATCH --mem=32GB", "export OMP_NUM_THREADS=8"):
        assert line in script, line


@pytest.mark.slow
def test_submitit_local_runs_a_tiny_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}", "resume=auto", *TINY,
                    *NO_SAMPLES, "train.steps=20", "variant=naive,reshaped"], cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert _status(_job(sweep, "variant=naive")) == {"status": "ok", "step": 20, "first_warning_step": 20}
    assert _status(_job(sweep, "variant=reshaped")) == {"status": "ok", "step": 20, "first_warning_step": None}
