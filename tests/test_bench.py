"""scripts/bench.py runs every configuration and reports them (speed targets live in its output, not here);
sngan.diagnostics.profiling counts what an iteration dispatches."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, load_script
from sngan.diagnostics.profiling import aten_ops_per_iteration

SCRIPT = ROOT / "scripts" / "bench.py"
TINY_ARGS = argparse.Namespace(model="cnn", resolution=16, g_ch=32, d_ch=8, batch=4, n_dis=1,
                               amp=False, compile=False, channels_last=False)


def _legacy_profiler_count(run) -> int:
    """The same count through the older autograd profiler API: every aten event, nested included."""
    with torch.autograd.profiler.profile() as prof:
        run()
    return sum(event.name.startswith("aten::") for event in prof.function_events)


def test_aten_op_count_includes_nested_ops():
    count = aten_ops_per_iteration
    x, y = torch.ones(3), torch.ones(3)
    assert count(lambda: x.add_(y)) == 1  # one op, nothing below it
    m, v = torch.ones(4, 3), torch.ones(3)
    with torch.autograd.profiler.profile() as prof:
        torch.mv(m, v)
    top_level = [e for e in prof.function_events if e.name.startswith("aten::") and e.cpu_parent is None]
    assert len(top_level) == 1  # mv calls other ops (its output's allocation, addmv) ...
    assert count(lambda: torch.mv(m, v)) == _legacy_profiler_count(lambda: torch.mv(m, v)) > 1  # ... counted too


def test_aten_ops_per_iteration_of_the_runners():
    bench = load_script("bench.py")
    counts = {}
    for variant in ("none", "reshaped", "builtin"):
        run, _ = bench.make_runner(TINY_ARGS, variant, torch.device("cpu"))
        run(), run()  # warm: the optimizers' state exists from here on
        counts[variant] = aten_ops_per_iteration(run)
        assert aten_ops_per_iteration(run) == counts[variant] == _legacy_profiler_count(run)
    assert counts["none"] < counts["reshaped"] < counts["builtin"]  # SN costs ops, ours fewer than torch's


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
        assert isinstance(row["aten_ops_per_iter"], int) and row["aten_ops_per_iter"] > 0
        assert row["img_per_s"] == pytest.approx(4 / row["s_per_iter"])
    assert rows["none"]["aten_ops_per_iter"] < rows["reshaped"]["aten_ops_per_iter"]
    assert 0 < result["diagnostics_share_at_log_every"] < 1
    assert 0 < result["sigma_s"] < result["diagnostics_s"]
    assert "diagnostics:" in proc.stdout and "aten ops" in proc.stdout
    assert result["settings"]["amp"] and result["settings"]["channels_last"]
