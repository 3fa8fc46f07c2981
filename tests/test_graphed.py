"""train.cuda_graph and train.deterministic: what a CPU can check (the snapshot undone around the
capture, state updated in place, the trainer's graphed branch with a stand-in for the capture, the
host-free EMA, learning rates across devices, the switches), and the CUDA checks, skipped without
a GPU (scripts/gpu_checks.sh runs them)."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from helpers import SCALARS_EVERY_2, TINY, assert_identical, compose_config, last_checkpoint, run_script, train_tiny
from sngan.training.distributed import Context
from sngan.training.ema import build_ema, update_ema
from sngan.run.errors import UserError
from sngan.training.graphed import TrainingSnapshot
from sngan.models import build_discriminator, build_generator
from sngan.spectral import VARIANTS, apply_spectral_norm
from sngan.training.step import gan_iteration
from sngan.training.determinism import set_determinism
from sngan.training.optim import build_optimizers, place_learning_rates
from sngan.training.setup import check_device_settings

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# cuBLAS reads its workspace setting once, when this process first uses it: before any test does.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _setup(variant: str, device="cpu"):
    torch.manual_seed(0)
    G = build_generator("cnn", resolution=16, g_ch=32).to(device)
    D = apply_spectral_norm(build_discriminator("cnn", resolution=16, d_ch=8), variant).to(device)
    cfg = compose_config(TINY + [f"variant={variant}"])
    opt_g, opt_d, sched_g, sched_d = build_optimizers(cfg, G, D, torch.device(device))
    real = torch.rand(8, 3, 16, 16, device=device) * 2 - 1
    if variant == "operator":
        with torch.no_grad():
            D.eval()(real[:1])  # the operator variant learns its input size from a first forward
            D.train()
    step = lambda: gan_iteration(G, D, opt_g, opt_d, lambda: real, batch_size=8, n_dis=2, loss="hinge")
    return G, D, opt_g, opt_d, step, (sched_g, sched_d)


def _tensors(G, D, opt_g, opt_d) -> dict[str, torch.Tensor]:
    found = {f"G.{k}": v for k, v in G.state_dict().items()} | {f"D.{k}": v for k, v in D.state_dict().items()}
    for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
        for i, state in enumerate(opt.state.values()):
            found |= {f"{name}.{i}.{k}": v for k, v in state.items()}
    return found


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("trained_before", [0, 2])
def test_snapshot_undoes_warmup_iterations(variant, trained_before):
    """What the capture does around its warm-up: snapshot, iterate, restore. The next iteration
    must then equal the first iteration of an identical setup that never warmed up, bit for bit
    (weights, buffers, naive's in-place divisions, power-iteration vectors, Adam's moments and
    step counts, the RNG): from a fresh optimizer and from one that has stepped before."""
    plain = _setup(variant)  # each setup seeds the global RNG afresh: built and run one after the other
    for _ in range(trained_before + 1):
        plain[4]()
    expected, expected_rng = _tensors(*plain[:4]), torch.get_rng_state()
    warmed = _setup(variant)
    for _ in range(trained_before):
        warmed[4]()
    saved = TrainingSnapshot(warmed[:2], warmed[2:4])
    for _ in range(3):
        warmed[4]()
    changed = {k: v.clone() for k, v in _tensors(*warmed[:4]).items()}  # state_dict() gives the live tensors
    saved.restore()
    warmed[4]()
    after = _tensors(*warmed[:4])
    assert after.keys() == expected.keys()
    assert [k for k in after if not torch.equal(after[k], expected[k])] == []
    assert torch.equal(torch.get_rng_state(), expected_rng)
    assert any(not torch.equal(changed[k], expected[k]) for k in expected)  # the warm-up did change things


@pytest.mark.parametrize("variant", VARIANTS)
def test_iteration_updates_every_state_in_place(variant):
    """A captured graph replays fixed addresses: every parameter, buffer (power-iteration vectors,
    BatchNorm statistics) and optimizer state must be updated in place, never replaced by a new
    tensor (which the graph would not see). Checked on the CPU for every variant."""
    G, D, opt_g, opt_d, step, _ = _setup(variant)
    step()  # creates the optimizer states
    before = {k: (v.data_ptr(), v.clone()) for k, v in _tensors(G, D, opt_g, opt_d).items()}
    step()
    after = _tensors(G, D, opt_g, opt_d)
    assert after.keys() == before.keys()
    assert [k for k, v in after.items() if v.data_ptr() != before[k][0]] == []
    assert any(not torch.equal(v, before[k][1]) for k, v in after.items())


def test_ema_update_equals_torchs_averaged_model():
    """The host-free EMA against AveragedModel.update_parameters with get_ema_multi_avg_fn: every
    parameter and buffer (BatchNorm's integer counter included) bit for bit, from the first update."""
    torch.manual_seed(0)
    G = build_generator("cnn", resolution=16, g_ch=32)
    theirs, ours = build_ema(G, 0.999), build_ema(G, 0.999)
    opt = torch.optim.Adam(G.parameters(), 1e-2)
    for _ in range(5):
        G(torch.randn(4, G.z_dim)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        theirs.update_parameters(G)
        update_ema(ours, G, 0.999)
        a, b = theirs.state_dict(), ours.state_dict()
        assert [k for k in a if not torch.equal(a[k], b[k])] == []
    counters = [b for b in ours.module.buffers() if not b.is_floating_point()]
    assert int(ours.n_averaged) == 5 and counters and all(int(c) > 0 for c in counters)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler")
def test_learning_rates_follow_the_device_of_the_run():
    """A checkpoint written on CUDA keeps its learning rate as a tensor in the optimizer state; a
    run that loads it on the CPU gets floats back, and its linear schedule continues exactly."""
    cfg = compose_config(TINY + ["optim.lr_decay=linear", "train.steps=10"])
    G, D = build_generator("cnn", resolution=16, g_ch=32), build_discriminator("cnn", resolution=16, d_ch=8)
    first = build_optimizers(cfg, G, D, torch.device("cpu"))
    for sched in first[2:]:
        sched.step()
    states = [o.state_dict() for o in first]
    for state in states[:2]:  # as a CUDA run saves them: float32 tensors
        state["param_groups"][0]["lr"] = torch.tensor(state["param_groups"][0]["lr"])
    states[2]["_last_lr"] = [torch.tensor(lr) for lr in states[2]["_last_lr"]]
    assert float(states[0]["param_groups"][0]["lr"]) != first[0].param_groups[0]["lr"]  # rounded
    second = build_optimizers(cfg, G, D, torch.device("cpu"))
    for obj, state in zip(second, states):
        obj.load_state_dict(state)
    place_learning_rates(second, torch.device("cpu"))
    for opt in second[:2]:
        assert type(opt.param_groups[0]["lr"]) is float
        assert opt.param_groups[0]["lr"] == first[0].param_groups[0]["lr"] == 0.9 * float(cfg.optim.lr)
    for a, b in zip(first[2:], second[2:]):
        a.step(), b.step()
        assert a.get_last_lr() == b.get_last_lr() and all(type(lr) is float for lr in b.get_last_lr())


def test_cuda_graph_is_refused_where_it_cannot_run():
    cfg = compose_config(TINY + ["train.cuda_graph=true"])
    with pytest.raises(UserError, match="needs a CUDA device"):
        check_device_settings(cfg, torch.device("cpu"), Context(rank=0, world_size=1))
    with pytest.raises(UserError, match="not supported under torchrun"):
        check_device_settings(cfg, torch.device("cuda"), Context(rank=0, world_size=2))


def test_determinism_switches_are_set_both_ways(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    benchmark = torch.backends.cudnn.benchmark
    try:
        set_determinism(True)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        set_determinism(False)
        assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    finally:
        set_determinism(False)
        torch.backends.cudnn.benchmark = benchmark


def test_deterministic_run_resumes_bit_exactly_and_the_switch_may_change(tmp_path):
    """train.deterministic is resumable (it changes no maths): a CPU run resumed with it on ends
    bit-identical to an uninterrupted run without it."""
    try:
        whole = tmp_path / "whole"
        train_tiny(whole, [*SCALARS_EVERY_2, "train.steps=6"])
        part = tmp_path / "part"
        train_tiny(part, [*SCALARS_EVERY_2, "train.steps=3"])
        overrides = ["train.steps=6", "resume=true", "train.deterministic=true"]
        train_tiny(part, [*SCALARS_EVERY_2, *overrides], command_line=overrides)
        assert_identical(last_checkpoint(whole), last_checkpoint(part))
    finally:
        set_determinism(False)


def rerun_capture(run):
    """A CPU stand-in for capture_cuda_graph: the 'replay' calls `run` again and writes its results
    into the first call's output tensors, as a replayed graph writes into its static outputs."""
    output = run()

    def replay():
        for static, new in zip(output, run()):
            static.copy_(new)
    return replay, output


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_trainers_graphed_branch_equals_eager_with_a_stand_in_graph(tmp_path, monkeypatch, variant):
    """Everything train.cuda_graph does but the capture itself, run on the CPU: static input
    buffers fed n_dis batches per iteration, warm-up iterations undone, the EMA and a decaying
    learning rate outside the graph, a resume that captures again. It must end bit-identical to
    the eager run."""
    import sngan.training.graphed
    import sngan.training.setup

    monkeypatch.setattr(sngan.training.graphed, "capture_cuda_graph", rerun_capture)
    # lets it run on CPU
    monkeypatch.setattr(sngan.training.setup, "check_device_settings", lambda cfg, device, ctx: None)
    run = [*SCALARS_EVERY_2, f"variant={variant}", "train.n_dis=2", "train.ema_decay=0.9", "optim.lr_decay=linear",
           "train.steps=6", "ckpt.every=3"]
    eager, graphed, resumed = tmp_path / "eager", tmp_path / "graphed", tmp_path / "resumed"
    train_tiny(eager, run)
    train_tiny(graphed, run + ["train.cuda_graph=true"])
    assert_identical(last_checkpoint(eager), last_checkpoint(graphed))
    shutil.copytree(graphed, resumed)  # as if killed after its step-3 checkpoint
    shutil.copy(resumed / "checkpoints" / "step_0000003.pt", resumed / "checkpoints" / "last.pt")
    (resumed / "checkpoints" / "step_0000006.pt").unlink()
    train_tiny(resumed, run + ["train.cuda_graph=true", "resume=true"], command_line=["resume=true"])
    assert_identical(last_checkpoint(eager), last_checkpoint(resumed))


# --- on a GPU ----------------------------------------------------------------------------------------

GPU_RUN = [*SCALARS_EVERY_2, "device=cuda", "train.deterministic=true", "train.steps=20", "ckpt.every=10"]


def _gpu_run(tmp_path, name, extra=(), overrides=None):
    train_tiny(tmp_path / name, GPU_RUN + list(extra), command_line=overrides)
    return last_checkpoint(tmp_path / name)


@cuda
@pytest.mark.parametrize("variant", VARIANTS)
def test_graphed_equals_eager_on_gpu(tmp_path, variant):
    """20 steps with the iteration captured and replayed end bit-identical to 20 eager steps
    (deterministic kernels on both sides; the EMA and a linear learning-rate decay included)."""
    extra = [f"variant={variant}", "train.ema_decay=0.9", "optim.lr_decay=linear"]
    try:
        eager = _gpu_run(tmp_path, "eager", extra)
        graphed = _gpu_run(tmp_path, "graphed", extra + ["train.cuda_graph=true"])
        assert_identical(eager, graphed)
    finally:
        set_determinism(False)


@cuda
@pytest.mark.parametrize("graphed", [False, True])
def test_deterministic_gpu_run_resumes_bit_exactly(tmp_path, graphed):
    extra = [f"train.cuda_graph={str(graphed).lower()}", "train.n_dis=2", "train.ema_decay=0.9"]
    try:
        whole = _gpu_run(tmp_path, "whole", extra)
        _gpu_run(tmp_path, "part", extra + ["train.steps=10"])
        overrides = ["train.steps=20", "resume=true"]
        resumed = _gpu_run(tmp_path, "part", extra + overrides, overrides=overrides)
        assert_identical(whole, resumed)
    finally:
        set_determinism(False)


@cuda
def test_two_deterministic_gpu_runs_are_identical(tmp_path):
    try:
        assert_identical(_gpu_run(tmp_path, "a", ["variant=builtin"]), _gpu_run(tmp_path, "b", ["variant=builtin"]))
    finally:
        set_determinism(False)


@cuda
@pytest.mark.parametrize("graphed", [False, True])
def test_gpu_iteration_never_waits_for_the_host(graphed):
    """One iteration, its EMA update and its scheduler steps under sync debug mode "error": any
    host synchronisation inside raises. (The capture itself, before, may synchronise.)"""
    from sngan.training.graphed import GraphedIteration

    G, D, opt_g, opt_d, step, scheds = _setup("reshaped", "cuda")
    ema = build_ema(G, 0.9)
    real = torch.rand(8, 3, 16, 16, device="cuda")
    run = step
    if graphed:
        graph = GraphedIteration(lambda feed: gan_iteration(G, D, opt_g, opt_d, feed, batch_size=8, n_dis=2,
                                                             loss="hinge"), modules=(G, D), optimizers=(opt_g, opt_d))
        graph([real, real])
        run = lambda: graph([real, real])
    run()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
        update_ema(ema, G, 0.9)
        for sched in scheds:
            sched.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
def test_bench_reports_graphed_rows_and_kernels_on_gpu(tmp_path):
    import json

    out = tmp_path / "bench.json"
    proc = run_script("bench.py", ["--device", "cuda", "--resolution", "16", "--g-ch", "32", "--d-ch", "8", "--batch",
                                   "4", "--steps", "2", "--repeats", "1", "--cuda-graph", "--deterministic",
                                   "--json", str(out)], timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = {row["config"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == set(VARIANTS) | {"textbook"} | {v + "+graph" for v in VARIANTS}
    for name, row in rows.items():
        assert row["cuda_kernels_per_iter"] > 0 and 0 < row["gpu_busy_share"] <= 1.0
    assert rows["none+graph"]["vs_none_graphed"] == 1.0
