"""What a run says about itself (train.log read back, its printed commands run as printed), and
the --help of every command-line tool."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from helpers import run_script, train_tiny


@pytest.mark.slow
def test_a_run_introduces_itself_and_its_commands_work(tmp_path):
    run = tmp_path / "outputs" / "seed=0,variant=naive"  # a sweep job's name: '=' and ',' need quoting
    proc = train_tiny(run, ["variant=naive", "train.steps=4", "log.every=2", "log.sample_every=4", "log.eval_every=4"],
                      via="cli", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    log = (run / "train.log").read_text()
    for text in ("sngan run (new run): outputs/seed=0,variant=naive", "variant naive | data synthetic 16x16",
                 "model cnn: G ", "4 steps, batch 8, n_dis 5", "thread", "checkpoints/ every 250, samples/ every 4",
                 "done at step 4: clean_rate", "health: normalization"):
        assert text in log, text
    # train.log holds every line the console shows (the bar aside), with time and level
    console = [line for line in proc.stdout.splitlines() if line.strip()]
    assert console and all(line.removeprefix("WARNING: ") in log for line in console)
    commands = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].split("#")[0].strip()
                for line in console if line.startswith("  ") and line.strip().split(":")[0] in
                ("resume", "sample", "evaluate", "tensorboard")}
    assert set(commands) == {"resume", "sample", "evaluate", "tensorboard"}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("resume", "sample", "evaluate"):
        argv = shlex.split(commands[name])
        assert argv[:2] == ["python", "-m"]
        done = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, (name, done.stderr)
    assert "is complete (step 4 of train.steps=4): nothing to do" in (run / "train.log").read_text()
    assert (tmp_path / "samples.png").is_file() and (run / "checkpoints" / "step_0000004.metrics.json").is_file()


@pytest.mark.parametrize("script", ["compare_variants.py", "sigma_table.py", "bench.py", "seed_study.sh"])
def test_every_script_has_a_help(script):
    proc = run_script(script, ["--help"], timeout=120)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) > 4, proc.stderr
    assert "default" in proc.stdout or script in ("compare_variants.py", "seed_study.sh")


@pytest.mark.parametrize("overrides,shown", [
    (["variant=naive", "seed=3", "resume=auto"], "python -m sngan.train variant=naive seed=3 hydra.run.dir="),
    (["resume=true", "train.steps=8"], "python -m sngan.train [the settings in {run}/.hydra/config.yaml] hydra"),
])
def test_the_start_again_command_trains_the_same_run(tmp_path, overrides, shown):
    """From the run's own overrides; a resume's overrides (its records after it checkpointed) do not
    describe the run, so the command points to the config it trained with instead."""
    from omegaconf import OmegaConf

    from sngan.run.info import restart_command

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), run / ".hydra" / "overrides.yaml")
    assert restart_command(run).startswith(shown.format(run=run))
