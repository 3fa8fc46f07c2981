"""What a run says about itself (train.log read back, its printed commands run as printed), and
the --help of every command-line tool."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from helpers import last_checkpoint, run_script, train_tiny


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


def _interrupt_at(monkeypatch, at_step: int) -> None:
    """Ctrl-C (a KeyboardInterrupt) at the first health check of step `at_step`."""
    import sngan.train

    real = sngan.train.check_finite

    def check_finite(finite, step, *args):
        if step == at_step:
            raise KeyboardInterrupt
        return real(finite, step, *args)
    monkeypatch.setattr(sngan.train, "check_finite", check_finite)


def test_ctrl_c_says_how_to_go_on_and_that_command_finishes_the_run(tmp_path, monkeypatch, capsys):
    from helpers import call, last_checkpoint

    every = ["log.every=1", "log.sample_every=100", "log.eval_every=100", "ckpt.every=2"]
    fresh = tmp_path / "fresh"  # before the first checkpoint: nothing to continue from
    _interrupt_at(monkeypatch, 1)
    code, printed, _ = train_tiny(fresh, every + ["train.steps=4"], via="main", capsys=capsys)
    assert code == 130 and printed.strip() == ("error: interrupted; no checkpoint was written yet, nothing is kept: "
                                               "run the same command again to start over")

    run = tmp_path / "run"  # a finished run lengthened, stopped before its first new checkpoint
    monkeypatch.undo()
    assert train_tiny(run, every + ["train.steps=4"], via="main")[0] == 0
    _interrupt_at(monkeypatch, 5)
    code, printed, _ = train_tiny(run, ["resume=true", "train.steps=8"], base=[], via="main", capsys=capsys)
    assert code == 130 and printed.count("\n") == 1 and "train.steps=8" in printed, printed
    monkeypatch.undo()
    command = shlex.split(printed.split("continue with ", 1)[1])
    assert command[:4] == ["python", "-m", "sngan.train", "resume=true"]
    assert call("train", command[3:], capsys)[0] == 0
    assert last_checkpoint(run)["step"] == 8


def test_a_run_whose_lr_decays_to_its_last_step_is_not_offered_a_longer_resume(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, _ = train_tiny(run, ["train.steps=2", "optim.lr_decay=linear"], via="main")
    log = (run / "train.log").read_text()
    assert code == 0 and "resume=true" in log and "to lengthen" not in log
    assert "Lipschitz bound " in log and "certified bound " in log  # the CNN: its layer product is a bound
    code, printed, _ = train_tiny(run, ["resume=true", "train.steps=4"], base=[], via="main", capsys=capsys)
    assert code == 2 and printed.count("\n") == 1
    assert "with another train.steps: its learning rate decays linearly to 0 at train.steps=2, so the run cannot " \
           "be lengthened: drop train.steps, or start a new run" in printed


def test_a_resume_may_point_to_the_weights_and_statistics_elsewhere(tmp_path):
    """An offline node: the same Inception weights and real-data statistics, at other paths."""
    run = tmp_path / "run"
    assert train_tiny(run, ["train.steps=2"], via="main")[0] == 0
    moved = [f"metrics.cache_root={tmp_path / 'cache'}", f"metrics.inception_weights={tmp_path / 'w.pth'}"]
    assert train_tiny(run, ["resume=true", "train.steps=3", *moved], base=[], via="main")[0] == 0
    saved = last_checkpoint(run)
    assert saved["step"] == 3 and saved["config"]["metrics"]["cache_root"] == str(tmp_path / "cache")
    assert saved["config"]["metrics"]["inception_weights"] == str(tmp_path / "w.pth")  # the next resume's paths


def test_the_resnets_layer_product_is_not_called_a_bound(tmp_path):
    run = tmp_path / "run"
    assert train_tiny(run, ["model=resnet", "train.steps=1"], via="main")[0] == 0
    done = next(line for line in (run / "train.log").read_text().splitlines() if "done at step 1" in line)
    assert "product of layer norms (no bound here) " in done and "certified bound " in done
    assert "Lipschitz bound" not in done


def test_ctrl_c_in_a_sweep_is_one_line_naming_the_sweep_to_relaunch(tmp_path, monkeypatch, capsys):
    from helpers import TINY, call

    _interrupt_at(monkeypatch, 1)
    sweep = tmp_path / "sweep"
    code, printed, _ = call("train", ["-m", *TINY, "train.steps=2", "log.every=1", "seed=0,1",
                                      f"hydra.sweep.dir={sweep}"], capsys)
    assert code == 130 and "Traceback" not in printed and printed.count("\n") == 1, printed
    assert printed.startswith("error: interrupted; relaunch the sweep with the same arguments and resume=auto "
                              f"hydra.sweep.dir={sweep}: finished runs are skipped")


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
