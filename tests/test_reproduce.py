"""scripts/reproduce.py end to end on a generated STL-10 folder: train the preset (narrowed, 2 steps),
evaluate with the published protocols (sample counts scaled down, a stand-in for Inception), print the
published numbers beside the measured ones."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from helpers import ROOT, load_script
from datasets_on_disk import register_test_features, write_stl10
from sngan.diagnostics import metrics

SCRIPT = ROOT / "scripts" / "reproduce.py"
NARROW = ["model.g_ch=32", "model.d_ch=4", "train.batch_size=8", "train.steps=2", "metrics.during_training=false",
          "dataset.num_workers=0", "log.progress=false"]


@pytest.fixture
def small_protocols(monkeypatch):
    for name, counts in {"sngan": dict(isc_samples=40, isc_splits=4, fid_generated=20, fid_real=12),
                         "mimicry": dict(isc_samples=30, isc_splits=3, fid_generated=25, fid_real=50)}.items():
        monkeypatch.setitem(metrics.PROTOCOLS, name, dataclasses.replace(metrics.PROTOCOLS[name], **counts))


@pytest.mark.slow
def test_reproduce_trains_evaluates_and_prints_the_published_numbers(tmp_path, capsys, small_protocols):
    write_stl10(tmp_path / "stl", n_unlabeled=16)
    run = tmp_path / "run"
    args = ["stl10_resnet", "--root", str(tmp_path / "stl"), "--run-dir", str(run), "--device", "cpu",
            "--feature-extractor", register_test_features(), "--cache-root", str(tmp_path / "cache"), *NARROW]
    load_script("reproduce.py").main(args)
    printed = capsys.readouterr().out
    assert (run / "checkpoints" / "step_0000002.pt").is_file()
    sngan = json.loads((run / "checkpoints" / "step_0000002.sngan.metrics.json").read_text())
    mimicry = json.loads((run / "checkpoints" / "step_0000002.mimicry.metrics.json").read_text())
    assert sngan["protocol"]["isc_samples"] == 40 and sngan["protocol"]["fid_real"] == 12
    assert mimicry["protocol"]["fid_real"] == 16  # all the images the data set has
    assert (run / "reproduce.md").read_text().strip() in printed
    rows = json.loads((run / "reproduce.json").read_text())["rows"]
    table = {(r["protocol"], r["metric"]): (r["published"], r["measured"]) for r in rows}
    assert table == {
        ("sngan", "IS"): ("9.10 ± .04", f"{sngan['metrics/isc']:.2f} ± {sngan['metrics/isc_std']:.2f}"),
        ("sngan", "FID"): ("40.1 ± .50", f"{sngan['metrics/fid']:.2f}"),
        ("mimicry", "IS"): ("8.04 ± 0.07", f"{mimicry['metrics/isc']:.2f} ± {mimicry['metrics/isc_std']:.2f}"),
        ("mimicry", "FID"): ("39.56 ± 0.10", f"{mimicry['metrics/fid']:.2f}"),
    }
    for (protocol, metric), (published, measured) in table.items():
        assert f"| {protocol} | {metric} | {published} | {measured} |" in printed
    assert "Miyato et al. 2018 (arXiv:1802.05957), Table 2: SN-GANs, Eq. (17), ResNet, STL-10" in printed

    # Run again: the finished run is not trained further, and evaluating it again gives the same numbers.
    load_script("reproduce.py").main(args)
    assert json.loads((run / "reproduce.json").read_text())["rows"] == rows
    assert "is complete" in (run / "train.log").read_text()


def test_reproduce_help_documents_the_protocols():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "IS of 50000 generated images in 10 splits of 5000" in text
    assert "FID of 5000 generated images against 10000 real images" in text
    assert "FID of 50000 generated images against 50000 real images" in text
    for experiment in ("cifar10_cnn", "cifar10_resnet", "stl10_resnet", "celeba64"):
        assert experiment in text
    assert "IS 8.22 ± .05, FID 21.7 ± .21 (sngan)" in text


def test_reproduce_refuses_a_preset_without_a_published_number(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        load_script("reproduce.py").main(["embedded", "--root", str(tmp_path)])
    assert info.value.code == 2 and "invalid choice: 'embedded'" in capsys.readouterr().err
