"""Data parallelism: 2 CPU ranks on gloo through torchrun, checked against what must hold.

Replicas must agree bit for bit (parameters, spectral-norm vectors, BatchNorm statistics, EMA),
rank 0 alone writes, and checkpoints move between world sizes in both directions.
"""

from __future__ import annotations

import re

import pytest
import torch

from sngan.run import checkpoint
from sngan.training import distributed
from sngan.data.batches import BatchStream
from sngan.run.errors import UserError
from sngan.models import restore_models
from helpers import TINY, compose_config, run_cli, train_tiny


def torchrun(args, cwd):
    """`torchrun --standalone --nproc_per_node=2 -m sngan.train args` (gloo: no GPU here)."""
    return run_cli(["--standalone", "--nproc_per_node=2", "-m", "sngan.train", *args], cwd,
                   module="torch.distributed.run")


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]


def models_equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k][n], b[k][n]) for k in ("G", "D") for n in a[k])


class _Indexed(torch.utils.data.Dataset):
    def __len__(self):
        return 50

    def __getitem__(self, i):
        return torch.tensor(i)


@pytest.mark.parametrize("resume_at", [None, {"epoch": 1, "index": 2, "seed": 3}])
def test_ranks_share_out_exactly_the_single_process_batches(resume_at):
    one = BatchStream(_Indexed(), batch_size=8, seed=3)
    ranks = [BatchStream(_Indexed(), batch_size=8, seed=3, rank=r, world_size=4) for r in range(4)]
    if resume_at:
        for s in (one, *ranks):
            s.restore(resume_at)
    for _ in range(20):  # across several epochs of 6 global batches
        parts = [next(s) for s in ranks]
        assert [len(p) for p in parts] == [2] * 4
        assert torch.equal(torch.cat(parts), next(one))
        assert all(s.position == one.position for s in ranks)


def test_global_batch_must_split_over_the_ranks():
    with pytest.raises(ValueError, match="split evenly"):
        BatchStream(_Indexed(), batch_size=9, seed=0, rank=0, world_size=2)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["naive", "operator"])
def test_two_gloo_ranks_keep_identical_replicas(tmp_path, variant):
    ok(torchrun([*TINY, f"variant={variant}", "train.steps=4", "ckpt.every=2", "log.every=2",
                 "train.ema_decay=0.9", "hydra.run.dir=run"], tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # rank 1 wrote nothing of its own
    run = tmp_path / "run"
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    for name in ("step_0000002.pt", "last.pt"):
        state = checkpoint.load(run / "checkpoints" / name)
        assert len(state["replica_digests"]) == 2 and len(set(state["replica_digests"])) == 1
        assert len(state["rng_ranks"]) == 2 and state["data"]["index"] == state["step"] * 5
        # The digest the ranks agreed on is that of the weights and buffers rank 0 saved.
        _, G, D, ema = restore_models(state, torch.device("cpu"))
        assert distributed.state_digest(G, D, ema) == state["replica_digests"][0]


@pytest.mark.slow
def test_checkpoints_move_between_world_sizes(tmp_path):
    base = [*TINY, "variant=reshaped", "ckpt.every=2", "log.every=2", "ckpt.keep=5"]
    ok(torchrun([*base, "train.steps=4", "hydra.run.dir=a"], tmp_path))
    # 2 ranks resumed from their own step-2 snapshot end where the uninterrupted run ended.
    ok(torchrun([*base, "train.steps=4", "hydra.run.dir=b",
                 f"resume={tmp_path / 'a/checkpoints/step_0000002.pt'}"], tmp_path))
    a, b = (checkpoint.load(tmp_path / d / "checkpoints/last.pt") for d in "ab")
    assert models_equal(a, b) and a["data"] == b["data"]
    # A distributed checkpoint resumes in one process ...
    ok(train_tiny(tmp_path / "a", ["train.steps=6", "resume=true"], base=base, via="cli"))
    assert checkpoint.load(tmp_path / "a/checkpoints/last.pt")["step"] == 6
    # ... and a single-process one under 2 ranks, at the same global batch.
    ok(train_tiny(tmp_path / "c", ["train.steps=2"], base=base, via="cli"))
    ok(torchrun([*base, "train.steps=4", "hydra.run.dir=c", "resume=true"], tmp_path))
    c = checkpoint.load(tmp_path / "c/checkpoints/last.pt")
    assert c["step"] == 4 and c["data"] == b["data"] and len(set(c["replica_digests"])) == 1


def test_odd_global_batch_is_a_clear_error(tmp_path):
    proc = torchrun([*TINY, "train.batch_size=7", "train.steps=1", "hydra.run.dir=run"], tmp_path)
    assert proc.returncode != 0
    assert "error: train.batch_size (7) is the global batch" in proc.stderr
    frames = [line for line in proc.stderr.splitlines() if line.strip().startswith("File ")]
    ours = [line for line in frames if re.search(r"[/\\]sngan[/\\]\w+\.py", line)]  # not the checkout's name
    assert not ours  # torchrun reports the exit; no traceback of ours


@pytest.mark.parametrize("overrides,message", [
    (["train.g_batch_size=7"], "train.g_batch_size (7) is global like train.batch_size: it must split evenly over "
                               "the 2 ranks"),
    (["train.batch_size=2"], "train.batch_size must be >= 4 on 2 ranks"),
    (["train.g_batch_size=2"], "train.g_batch_size must be >= 4 on 2 ranks"),
])
def test_each_rank_gets_two_images_in_each_of_gs_batches(overrides, message):
    """The per-rank share of both of G's batches (D's fakes and G's update), checked before any work
    (the checks torchrun runs on every rank; the settings table sees only the global numbers)."""
    from sngan.training.distributed import Context
    from sngan.training.setup import check_device_settings

    cfg = compose_config(TINY + overrides)
    check_device_settings(compose_config(TINY), torch.device("cpu"), Context(rank=0, world_size=2))
    with pytest.raises(UserError) as refused:
        check_device_settings(cfg, torch.device("cpu"), Context(rank=0, world_size=2))
    assert str(refused.value).startswith(message)
