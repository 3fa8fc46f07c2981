"""scripts/compare_variants.py trains a small study and writes its report."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from conftest import ROOT, TINY


@pytest.mark.slow
def test_compare_variants_report(tmp_path):
    out = tmp_path / "report"
    cmd = [sys.executable, str(ROOT / "scripts" / "compare_variants.py"), "--out", str(out),
           "--variants", "naive,reshaped", "--seeds", "0,1", *TINY, "train.steps=4", "log.every=2",
           "log.eval_every=2", "log.sample_every=4", "ckpt.every=4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    text = (out / "report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith(("| naive", "| reshaped"))]
    assert len(rows) == 2 and all("| 2 | 0 |" in row for row in rows)  # 2 runs each, none diverged
    assert "±" in rows[0]  # mean ± std over the two seeds
    for name in ("sigma_matrix", "sigma_operator", "lipschitz", "losses", "metrics", "samples"):
        width, height = Image.open(out / f"{name}.png").size
        assert width > 200 and height > 200, name
    # --collect reads the same runs back
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_variants.py"), "--out",
                           str(tmp_path / "again"), "--collect", str(out / "runs")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "again" / "report.md").read_text() == text
