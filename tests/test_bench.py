"""scripts/bench.py runs every configuration and reports them (speed targets live in its output, not here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_bench_reports_every_variant_and_the_textbook_loop(tmp_path):
    switches = ["--amp", "--channels-last"]  # on: covers the plain path plus the switches
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--resolution", "16", "--g-ch", "32",
           "--d-ch", "8", "--batch", "4", "--steps", "1", "--repeats", "1", "--json", str(out), *switches]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    rows = {row["config"]: row for row in result["rows"]}
    assert set(rows) == {"none", "naive", "reshaped", "builtin", "operator", "textbook"}
    assert rows["none"]["vs_none"] == 1.0
    for row in rows.values():
        assert row["s_per_iter"] > 0 and row["peak_memory_mb"] > 0
        assert row["img_per_s"] == pytest.approx(4 / row["s_per_iter"])
    assert 0 < result["diagnostics_share_at_log_every"] < 1
    assert 0 < result["sigma_s"] < result["diagnostics_s"]
    assert "diagnostics:" in proc.stdout
    assert result["settings"]["amp"] and result["settings"]["channels_last"]
