"""The seed study's report (sngan.report, through scripts/compare_variants.py) on a fabricated sweep
folder: every number checked by hand. The script runs in this process, through its own `main` and
`run_main`; test_bad_input and test_runinfo run it as a real command."""

from __future__ import annotations

import csv
import itertools
import json
import math

import pytest
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from helpers import call
from sngan.report.csvs import RUN_COLUMNS, read_csv, write_csv
from sngan.report.stats import by_variant, early_warning, median_iqr, pairwise, wilson

STEPS = [100, 200, 300, 400, 500]
# clean_rate every 100 steps. naive: three of four collapse (best >= 0.1, later < 0.3 x best);
# reshaped: none does (seed 3 never reaches 0.1, so its drop is no collapse).
CURVES = {
    ("naive", 0): [0.10, 0.40, 0.05, 0.00, 0.20],   # collapses at 300 (0.05 < 0.12), recovers
    ("naive", 1): [0.20, 0.30, 0.50, 0.10, 0.00],   # at 400 (0.10 < 0.15)
    ("naive", 2): [0.30, 0.05, 0.00, 0.00, 0.01],   # at 200
    ("naive", 3): [0.05, 0.15, 0.25, 0.35, 0.45],   # never
    ("reshaped", 0): [0.05, 0.10, 0.20, 0.30, 0.36],
    ("reshaped", 1): [0.10, 0.20, 0.25, 0.20, 0.31],
    ("reshaped", 2): [0.00, 0.12, 0.22, 0.33, 0.41],
    ("reshaped", 3): [0.00, 0.05, 0.09, 0.02, 0.03],
}
MODES = {("naive", 0): 3, ("naive", 1): 0, ("naive", 2): 1, ("naive", 3): 6,
         ("reshaped", 0): 7, ("reshaped", 1): 5, ("reshaped", 2): 8, ("reshaped", 3): 2}
NAIVE_SIGMA, RESHAPED_SIGMA = [1.5, 1.3, 1.0], [1.05, 1.02, 1.0]  # conv1, conv2, fc
CONV1 = {("naive", 1): [1.5, 1.5, 1.9, 1.9, 1.9]}  # grows 27% at step 300, before its collapse at 400


def _fabricate_run(folder, variant, seed, clean, modes, *, status=None, steps=500, conv1=None):
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    cfg = {"variant": {"name": variant}, "seed": seed, "train": {"steps": steps, "n_dis": 5},
           "optim": {"lr": 1e-3, "beta1": 0.5, "beta2": 0.999}}
    OmegaConf.save(OmegaConf.create(cfg), folder / ".hydra" / "config.yaml")
    sigma = NAIVE_SIGMA if variant == "naive" else RESHAPED_SIGMA
    writer = SummaryWriter(str(folder))
    for i, (step, value) in enumerate(zip(STEPS, clean)):
        for layer, s in zip(("conv1", "conv2", "fc"), [conv1[i] if conv1 else sigma[0], *sigma[1:]]):
            writer.add_scalar(f"sigma/matrix/{layer}", s, step)
        writer.add_scalar("sigma/lipschitz_bound", 15.0 if variant == "naive" else 10.5, step)
        writer.add_scalar("metrics/clean_rate", value, step)
        writer.add_scalar("metrics/modes_covered", modes if step == STEPS[-1] else 1, step)
        writer.add_scalar("metrics/kl_uniform", 3.0, step)
    writer.close()
    if status is not None:
        (folder / "status.json").write_text(json.dumps(status))


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    for (variant, seed), clean in CURVES.items():
        _fabricate_run(root / f"seed={seed},variant={variant}", variant, seed, clean, MODES[(variant, seed)],
                       status={"status": "ok", "step": 500}, conv1=CONV1.get((variant, seed)))
    # a run stopped by a bad value (no scalars), and one killed halfway (no status.json)
    _fabricate_run(root / "seed=9,variant=naive", "naive", 9, [], 0,
                   status={"status": "failed", "reason": "train.steps must be a positive integer, got -1"})
    _fabricate_run(root / "seed=8,variant=reshaped", "reshaped", 8, [0.1, 0.2], 1)
    return root


def wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def fisher_by_hand(a, b, c, d):
    """Two-sided: the probabilities of every table with the same margins that are <= the observed one."""
    n1, n2, k = a + b, c + d, a + c
    prob = lambda x: math.comb(n1, x) * math.comb(n2, k - x) / math.comb(n1 + n2, k)
    observed = prob(a)
    return sum(prob(x) for x in range(max(0, k - n2), min(k, n1) + 1) if prob(x) <= observed * (1 + 1e-7))


def mann_whitney_by_hand(x, y):
    """Exact two-sided p (no ties): U of every split of the pooled values into groups of len(x), len(y)."""
    u = lambda xs, ys: sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in xs for b in ys)
    observed = u(x, y)
    pooled = list(x) + list(y)
    us = [u([pooled[i] for i in idx], [pooled[i] for i in range(len(pooled)) if i not in idx])
          for idx in itertools.combinations(range(len(pooled)), len(x))]
    low = sum(v <= observed for v in us) / len(us)
    high = sum(v >= observed for v in us) / len(us)
    return min(1.0, 2 * min(low, high))


def _report(capsys, *args) -> str:
    code, err, _ = call("compare_variants.py", list(map(str, args)), capsys)
    assert code == 0, err
    return err


def test_runs_csv_and_report_match_hand_computed_statistics(sweep, tmp_path, capsys):
    out = tmp_path / "report"
    err = _report(capsys, "--collect", sweep, "--out", out)
    assert "failed run" in err and "got -1" in err  # the reason reaches the console
    with open(out / "runs.csv") as f:
        rows = {(r["variant"], int(r["seed"])): r for r in csv.DictReader(f)}
    expected_collapse = {("naive", 0): "300", ("naive", 1): "400", ("naive", 2): "200", ("naive", 3): "",
                         ("reshaped", 0): "", ("reshaped", 1): "", ("reshaped", 2): "", ("reshaped", 3): ""}
    for key, step in expected_collapse.items():
        row = rows[key]
        assert row["collapse_step"] == step and row["collapsed"] == str(bool(step)), key
        assert row["status"] == "ok" and row["steps"] == "500"
        assert float(row["best_clean_rate"]) == pytest.approx(max(CURVES[key]))
        assert int(row["best_step"]) == STEPS[CURVES[key].index(max(CURVES[key]))]
        assert float(row["final_clean_rate"]) == pytest.approx(CURVES[key][-1])
        assert float(row["final_modes_covered"]) == MODES[key]
        # naive's geometric-mean sigma (1.5*1.3*1)^(1/3) = 1.25 > 1.2 warns at the first reading
        assert row["first_warning_step"] == ("100" if key[0] == "naive" else "")
        assert float(row["max_sigma_matrix"]) == pytest.approx(max(CONV1.get(key, [1.5 if key[0] == "naive" else 1.05])))
    assert rows[("naive", 9)]["status"] == "failed" and "got -1" in rows[("naive", 9)]["reason"]
    assert rows[("reshaped", 8)]["status"] == "incomplete" and rows[("reshaped", 8)]["last_step"] == "200"

    text = (out / "report.md").read_text()
    lo, hi = wilson_by_hand(3, 4)
    assert f"| 3 / 4 | 0.75 [{lo:.2f}, {hi:.2f}] |" in text
    lo, hi = wilson_by_hand(0, 4)
    assert f"| 0 / 4 | 0.00 [{lo:.2f}, {hi:.2f}] |" in text
    naive_final = [CURVES[("naive", s)][-1] for s in range(4)]
    reshaped_final = [CURVES[("reshaped", s)][-1] for s in range(4)]
    p_fisher = fisher_by_hand(3, 1, 0, 4)
    p_clean = mann_whitney_by_hand(naive_final, reshaped_final)
    p_modes = mann_whitney_by_hand([MODES[("naive", s)] for s in range(4)], [MODES[("reshaped", s)] for s in range(4)])
    assert f"| naive vs reshaped | 3/4 vs 0/4 | {p_fisher:.2g} | {p_clean:.2g} | {p_modes:.2g} |" in text
    assert "| reshaped vs operator | not enough runs |" in text
    # final clean_rate 0, 0.01, 0.2, 0.45: median 0.105, inclusive quartiles at positions 0.75 and 2.25
    q1, q3 = 0 + 0.75 * (0.01 - 0), 0.2 + 0.25 * (0.45 - 0.2)
    assert "| naive | 5 (4) | 1 / 0 / 0 | 3 / 4 |" in text and f"| 0.105 [{q1:.3g}, {q3:.3g}] |" in text
    # early warning: naive's three collapses were warned 100-300 steps ahead; its stable run also warned
    assert "| naive | first warning | 3 | 3 | 200 [100, 300] | 1 | 1 |" in text
    assert "| naive | a layer x1.25 worse | 3 | 1 | 100 [100, 100] | 1 | 0 |" in text  # seed 1 only
    assert "| reshaped | first warning | 0 | 0 | - | 4 | 0 |" in text
    assert "- naive seed 9: failed: train.steps must be a positive integer, got -1" in text
    assert "- reshaped seed 8: incomplete" in text
    for name in ("clean_rate_curves", "survival", "signature", "sigma_matrix", "metrics", "samples"):
        width, height = Image.open(out / f"{name}.png").size
        assert width > 200 and height > 200, name

    # rebuilt from the CSVs alone (run folders gone): the same statistics
    again = tmp_path / "again"
    again.mkdir()
    for name in ("runs.csv", "curves.csv"):
        (again / name).write_text((out / name).read_text())
    _report(capsys, "--out", again)
    strip_plots = lambda t: t.split("Plots:")[0]
    assert strip_plots((again / "report.md").read_text()) == strip_plots(text)


def test_a_study_continued_in_a_new_sweep_folder_keeps_its_earlier_runs(sweep, tmp_path, capsys):
    out = tmp_path / "report"
    _report(capsys, "--collect", sweep, "--out", out)
    before = (out / "runs.csv").read_text().splitlines()
    later = tmp_path / "later"  # the earlier folders are gone; one new run, and seed 8 trained again
    _fabricate_run(later / "seed=4,variant=reshaped", "reshaped", 4, [0.1, 0.2, 0.3, 0.3, 0.3], 6,
                   status={"status": "ok", "step": 500})
    _fabricate_run(later / "seed=8,variant=reshaped", "reshaped", 8, [0.1, 0.2, 0.3, 0.3, 0.3], 6,
                   status={"status": "ok", "step": 500})
    csv_before = (out / "runs.csv").read_bytes()
    code, err, _ = call("compare_variants.py", ["--collect", str(later), "--out", str(out)], capsys)  # no --add-csv
    assert code == 2 and err.count("\n") == 1 and f"--out {out} holds 9 run(s) that no --collect folder holds" in err
    assert f"add --add-csv {out} to keep them" in err and (out / "runs.csv").read_bytes() == csv_before
    _report(capsys, "--collect", later, "--add-csv", out, "--out", out)
    with open(out / "runs.csv") as f:
        listed = list(csv.DictReader(f))
    rows = {(r["variant"], r["seed"]): r for r in listed}
    assert len(listed) == len(rows) == len(before)  # 10 earlier rows (header aside) + 1 new, seed 8 replaced
    assert rows[("reshaped", "8")]["status"] == "ok" and rows[("reshaped", "4")]["status"] == "ok"
    assert rows[("naive", "9")]["status"] == "failed"
    with open(out / "curves.csv") as f:
        seed8 = [r for r in csv.DictReader(f) if r["variant"] == "reshaped" and r["seed"] == "8"]
    assert len(seed8) == 5  # the new record's curve, not the old one's two points as well


def test_statistics_match_hand_computations():
    collapse = {("naive", 0): 300, ("naive", 1): 400, ("naive", 2): 200}
    rows = [{"variant": v, "seed": s, "status": "ok", "collapsed": (v, s) in collapse,
             "collapse_step": collapse.get((v, s)), "first_warning_step": 100 if v == "naive" else None,
             "final_clean_rate": clean[-1], "final_modes_covered": MODES[(v, s)]} for (v, s), clean in CURVES.items()]
    rows.append({**rows[0], "seed": 9, "status": "failed"})  # no outcome: left out of every statistic
    groups = by_variant(rows[::-1])
    assert list(groups) == ["naive", "reshaped"] and [r["seed"] for r in groups["naive"]] == [0, 1, 2, 3, 9]
    for k, n in ((3, 4), (0, 4), (1, 8)):
        assert wilson(k, n) == pytest.approx(wilson_by_hand(k, n))
    t = pairwise(groups, "naive", "reshaped")
    assert (t["collapse_a"], t["n_a"], t["collapse_b"], t["n_b"]) == (3, 4, 0, 4)
    assert t["fisher_p"] == pytest.approx(fisher_by_hand(3, 1, 0, 4))
    assert t["mwu_final_clean_rate"] == pytest.approx(mann_whitney_by_hand(
        [CURVES[("naive", s)][-1] for s in range(4)], [CURVES[("reshaped", s)][-1] for s in range(4)]))
    assert pairwise(groups, "reshaped", "operator") is None
    assert median_iqr([0.0, 0.01, 0.2, 0.45]) == pytest.approx((0.105, 0.0075, 0.2625))
    e = early_warning(groups["naive"][:4])
    assert (e["collapsed"], e["warned_before"], sorted(e["leads"]), e["stable"], e["false_alarms"]) == (3, 3, [100, 200, 300], 1, 1)


def test_runs_csv_reads_back_what_was_written(tmp_path):
    row = {"variant": "naive", "seed": 3, "steps": 500, "best_clean_rate": 0.123456789, "collapsed": True,
           "collapse_step": None, "status": "ok", "optim": "lr0.001,b0.5/0.999,ndis5", "reason": "1", "run": "7"}
    write_csv(tmp_path / "runs.csv", [row], RUN_COLUMNS)
    back = read_csv(tmp_path / "runs.csv")[0]
    assert list(back) == RUN_COLUMNS
    assert back["best_clean_rate"] == 0.123457 and back["seed"] == 3 and back["collapsed"] is True
    assert back["collapse_step"] is None and back["reason"] == "1" and back["run"] == "7"  # text stays text


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    for name, header in (("foreign", "name,score\nx,1\n"), ("empty", "")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "runs.csv").write_text(header)
        (tmp_path / name / "curves.csv").write_text(header)
    sweep_folder = "give the sweep's folder (hydra.sweep.dir), which holds the run folders"
    for args, message in ((["--out", tmp_path / "r", "--collect", tmp_path / "missing"],
                           f"no such folder; {sweep_folder}"),
                          (["--out", tmp_path / "r"], "no runs.csv and curves.csv: pass --collect SWEEP"),
                          (["--out", tmp_path / "r", "--collect", tmp_path], f"; {sweep_folder}"),
                          (["--out", tmp_path / "r", "--add-csv", tmp_path], "add --collect SWEEP, or drop --add-csv"),
                          (["--out", tmp_path / "r", "--collect", tmp_path, "--add-csv", tmp_path / "r"],
                           "no runs.csv and curves.csv there; give the --out folder of an earlier report"),
                          (["--out", tmp_path / "foreign"], "foreign/runs.csv is not a runs.csv of "
                           "scripts/compare_variants.py (it lacks the columns variant, seed, steps, best_clean_rate, ...)"),
                          (["--out", tmp_path / "empty"], "it lacks the columns variant")):
        code, err, _ = call("compare_variants.py", list(map(str, args)), capsys)
        assert code == 2 and message in err.splitlines()[-1] and "Traceback" not in err


def test_a_full_disk_while_rewriting_the_study_keeps_its_csv_whole(sweep, tmp_path, monkeypatch, capsys):
    """A study collected again into its own folder on a disk that fills up: one line, and runs.csv
    (the only record of runs whose folders are gone) as it was."""
    import errno
    import os

    from sngan.run import checkpoint

    out = tmp_path / "report"
    assert call("compare_variants.py", ["--collect", str(sweep), "--out", str(out)], capsys)[0] == 0
    before = (out / "runs.csv").read_bytes()
    real = os.fsync

    def full(fd):  # the data does not fit: the write fails before it is durable
        real(fd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(checkpoint.os, "fsync", full)
    args = ["--collect", str(sweep), "--add-csv", str(out), "--out", str(out)]
    code, err, _ = call("compare_variants.py", args, capsys)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith(f"error: cannot write {out / 'runs.csv'} (No space left on device): free space on that "
                          "file system, then run it again")
    assert (out / "runs.csv").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
