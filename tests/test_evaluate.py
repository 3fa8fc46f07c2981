"""`python -m sngan.evaluate`: oracle metrics, per-layer sigmas, and the torch-fidelity path."""

from __future__ import annotations

import json

import pytest
import torch

from datasets_on_disk import register_test_features, skip_cifar10_md5, write_celeba, write_cifar10
from helpers import QUIET, TINY_MODEL, call, read_scalars, run_cli, train_tiny
from sngan.run import checkpoint
from sngan.run.errors import UserError
from sngan.evaluate import evaluate


register_test_features()


def test_cli_prints_json_last_and_writes_it_beside_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    train_tiny(run, [*QUIET, "train.steps=3", "log.every=3", "log.eval_every=3", "seed=5", "train.ema_decay=0.5"])
    proc = run_cli([f"ckpt={run}", "n=64"], cwd=tmp_path, module="sngan.evaluate")  # TINY's log.n_eval
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == json.loads((run / "checkpoints" / "step_0000003.metrics.json").read_text())
    assert not (run / "checkpoints" / "last.metrics.json").exists()
    assert result["step"] == 3 and result["z_seed"] == 5 and result["generator"] == "EMA of G"
    assert "64 samples of the EMA of G, z seed 5 (the trainer's own evaluation)" in proc.stderr
    assert result["metrics/num_modes"] == 112
    # the same numbers the trainer logged for these weights at step 3: sigmas and sample quality
    logged = read_scalars(run)
    # (the trainer's operator sigmas to its Lanczos tolerance, 1e-3; evaluate's to 1e-6)
    for tag, rel in (("sigma/matrix/conv1", 1e-6), ("sigma/operator_upper/conv3", 1e-6),
                     ("sigma/operator/conv3", 1e-3), ("sigma/lipschitz_bound", 1e-3)):
        assert result[tag] == pytest.approx(logged[tag][-1][1], rel=rel), tag
    for tag in ("metrics/clean_rate", "metrics/modes_covered", "metrics/kl_uniform"):
        assert result[tag] == pytest.approx(logged[tag][-1][1], abs=1e-6), tag
    product = 1.0
    for key, value in result.items():
        if key.startswith("sigma/operator/"):
            product *= value
    assert result["sigma/lipschitz_bound"] == pytest.approx(product)
    assert result["sigma/operator_gap/conv1"] == pytest.approx(
        result["sigma/operator_upper/conv1"] / result["sigma/operator_lower/conv1"] - 1)


def test_evaluate_scores_the_very_images_the_trainer_scored(tmp_path, monkeypatch):
    """A 3-step run scores no clean sample, so equal metrics would prove little: compare the images."""
    from sngan.data.synthetic import ShapesOracle

    scored = []
    real_metrics = ShapesOracle.oracle_metrics
    monkeypatch.setattr(ShapesOracle, "oracle_metrics", lambda self, images: (scored.append(images.clone()),
                                                                              real_metrics(self, images))[1])
    run = tmp_path / "run"
    train_tiny(run, [*QUIET, "train.steps=3", "log.eval_every=3", "seed=5", "train.ema_decay=0.5"])
    evaluate(str(run), n=64)
    evaluate(str(run), n=64, seed=6)
    trainer, same, other = scored
    assert torch.equal(trainer, same) and not torch.allclose(trainer, other)


def _cifar10_run(tmp_path, monkeypatch):
    """A 2-step run on a generated CIFAR-10 folder, without metrics during training."""
    write_cifar10(tmp_path / "cifar", n_per_batch=20)
    skip_cifar10_md5(monkeypatch)
    run = tmp_path / "run"
    train_tiny(run, [*QUIET, "dataset=cifar10", f"dataset.root={tmp_path / 'cifar'}", "dataset.download=false",
                     "dataset.resolution=32", "dataset.num_workers=0", "train.steps=2",
                     "metrics.during_training=false"], base=TINY_MODEL)
    return run


def test_fid_is_kid_through_torch_fidelity_with_a_stand_in_extractor(tmp_path, monkeypatch):
    run = _cifar10_run(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    result = evaluate(str(run), n=64, feature_extractor="sngan-test-features", cache_root=str(cache))
    for key in ("metrics/fid", "metrics/isc", "metrics/kid"):
        assert torch.isfinite(torch.tensor(result[key])), key
    assert result["metrics/fid"] > 0 and result["metrics/isc"] >= 1
    assert any(cache.rglob("*sngan-cifar10-32-sngan-test-features*"))  # real statistics cached
    again = evaluate(str(run), n=64, feature_extractor="sngan-test-features", cache_root=str(cache))
    assert again["metrics/fid"] == pytest.approx(result["metrics/fid"])


def test_periodic_fid_during_training_changes_nothing_about_the_run(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "cifar", n_per_batch=20)
    skip_cifar10_md5(monkeypatch)
    common = ["dataset=cifar10", f"dataset.root={tmp_path / 'cifar'}", "dataset.download=false",
              "dataset.resolution=32", "dataset.num_workers=0", "train.steps=3",
              "log.every=1000", "log.sample_every=1000", "log.n_eval=32",
              "metrics.feature_extractor=sngan-test-features",
              f"metrics.cache_root={tmp_path / 'cache'}"]
    train_tiny(tmp_path / "fid", common + ["log.eval_every=1"], base=TINY_MODEL)
    train_tiny(tmp_path / "plain", common + ["metrics.during_training=false"], base=TINY_MODEL)
    scalars = read_scalars(tmp_path / "fid")
    for tag in ("metrics/fid", "metrics/isc", "metrics/kid"):
        assert [step for step, _ in scalars[tag]] == [1, 2, 3], tag
        assert all(torch.isfinite(torch.tensor(v)) for _, v in scalars[tag])
    assert "metrics/fid" not in read_scalars(tmp_path / "plain")
    a, b = (checkpoint.load(tmp_path / run / "checkpoints" / "last.pt") for run in ("fid", "plain"))
    for part in ("G", "D"):  # evaluating draws nothing from the run's RNG and leaves G in train mode
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part


def test_unavailable_inception_weights_stop_a_real_data_run_before_it_starts(tmp_path):
    write_celeba(tmp_path / "celeba", n=8)
    proc = train_tiny(tmp_path / "run", ["dataset=celeba", f"dataset.root={tmp_path / 'celeba'}",
                                         "dataset.resolution=16", "dataset.num_workers=0", "train.batch_size=4",
                                         "train.steps=2", "metrics.inception_weights=/nonexistent/weights.pth"],
                      base=TINY_MODEL, via="cli")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "metrics.inception_weights=PATH" in proc.stderr and "metrics.during_training=false" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("args,message", [([], "missing ckpt"), (["ckpt=/nonexistent"], "does not exist"),
                                          (["ckpt=x", "n=1"], "n must be an integer >= 2")])
def test_bad_arguments(capsys, args, message):
    code, err, _ = call("evaluate", args, capsys)  # its main, in this process; test_bad_input runs real commands
    assert code != 0 and message in err and "Traceback" not in err


# --- published protocols ----------------------------------------------------------------------

class _Images(torch.utils.data.Dataset):
    """`n` blank images, for counting (nothing is computed from them here)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return torch.zeros(3, 8, 8)


@pytest.mark.parametrize("name,real,expected", [
    # Miyato et al. 2018, App. B.1 ("5000 examples ... repeated 10 times"; FID "over 10000 and 5000 samples")
    # and sngan_projection evaluation.py (calc_inception n_ims=50000 splits=10; calc_FID n_ims=5000)
    ("sngan", 100_000, {"isc": (50_000, 10), "fid": (5_000, 10_000)}),
    # kwotsin/mimicry README, Metrics: IS 50K samples at 10 splits; FID 50K real/generated samples
    ("mimicry", 100_000, {"isc": (50_000, 10), "fid": (50_000, 50_000)}),
    ("mimicry", 20_000, {"isc": (50_000, 10), "fid": (50_000, 20_000)}),  # all the real images there are
])
def test_a_protocol_asks_torch_fidelity_for_its_sample_counts(monkeypatch, tmp_path, name, real, expected):
    import torch_fidelity

    from sngan.diagnostics.metrics import PROTOCOLS, protocol_metrics
    from sngan.models import build_generator

    calls = []

    def record(**kwargs):
        calls.append(kwargs)
        return {"inception_score_mean": 5.0, "inception_score_std": 0.1, "frechet_inception_distance": 30.0}

    monkeypatch.setattr(torch_fidelity, "calculate_metrics", record)
    G = build_generator("cnn", resolution=16, z_dim=8, g_ch=16)
    result = protocol_metrics(G, _Images(real), PROTOCOLS[name], cache_name="x", cache_root=tmp_path,
                              device=torch.device("cpu"), seed=3)
    isc, fid = calls
    assert (isc["input1_model_num_samples"], isc["isc_splits"]) == expected["isc"]
    assert isc["isc"] and not isc.get("fid") and "input2" not in isc
    assert (fid["input1_model_num_samples"], len(fid["input2"])) == expected["fid"]
    assert fid["fid"] and not fid.get("isc") and fid["input2_cache_name"] == f"x-real{expected['fid'][1]}"
    assert isc["rng_seed"] == fid["rng_seed"] == 3
    assert result["protocol"]["fid_real"] == expected["fid"][1]
    assert (result["isc"], result["isc_std"], result["fid"]) == (5.0, 0.1, 30.0)


def test_the_real_subset_is_fixed_and_distinct():
    from sngan.diagnostics.metrics import real_subset

    data = _Images(1000)
    a, b = real_subset(data, 300), real_subset(data, 300)
    assert a.indices == b.indices and len(set(a.indices)) == 300 and a.indices == sorted(a.indices)
    assert max(a.indices) > 900 and min(a.indices) < 100  # spread over the data set, not its first images
    assert real_subset(data, 1000) is data and real_subset(data, 5000) is data


def test_evaluate_with_a_protocol_matches_direct_torch_fidelity_calls(tmp_path, monkeypatch):
    """The protocol's numbers are torch-fidelity's on exactly the samples it names (counts scaled down:
    the real ones need Inception on a GPU)."""
    import dataclasses

    import torch_fidelity

    from sngan.diagnostics import metrics
    from sngan.data import build_dataset
    from sngan.models import restore_models

    run = _cifar10_run(tmp_path, monkeypatch)
    small = dataclasses.replace(metrics.PROTOCOLS["sngan"], isc_samples=40, isc_splits=4, fid_generated=30,
                                fid_real=50)
    monkeypatch.setitem(metrics.PROTOCOLS, "sngan", small)
    features = "sngan-test-features"
    result = evaluate(str(run), feature_extractor=features, cache_root=str(tmp_path / "cache"), protocol="sngan")
    assert result["protocol"] == {**dataclasses.asdict(small)}
    assert "n" not in result and "metrics/kid" not in result
    assert json.loads((run / "checkpoints" / "step_0000002.sngan.metrics.json").read_text()) == result
    assert not (run / "checkpoints" / "step_0000002.metrics.json").exists()

    state = checkpoint.load(run / "checkpoints" / "last.pt")
    _, G, _, _ = restore_models(state, torch.device("cpu"))
    real = build_dataset(state["config"]["dataset"] | {"root": str(tmp_path / "cifar")})
    subset = torch.randperm(100, generator=torch.Generator().manual_seed(0))[:50].sort().values.tolist()
    G.eval()

    def as_uint8(x):  # [-1, 1] to the uint8 images torch-fidelity's extractors take, written out here
        return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)

    class Uint8G(torch.nn.Module):
        def forward(self, z):
            return as_uint8(G(z))

    class Uint8Real(torch.utils.data.Dataset):
        def __len__(self):
            return len(subset)

        def __getitem__(self, i):
            return as_uint8(real[subset[i]])

    wrapped = torch_fidelity.GenerativeModelModuleWrapper(Uint8G(), G.z_dim, "normal", 0)
    common = dict(input1=wrapped, feature_extractor=features, rng_seed=state["config"]["seed"], verbose=False,
                  cuda=False, save_cpu_ram=True)
    direct_isc = torch_fidelity.calculate_metrics(**common, input1_model_num_samples=40, isc=True, isc_splits=4)
    direct_fid = torch_fidelity.calculate_metrics(
        **common, input1_model_num_samples=30, fid=True,
        input2=Uint8Real())
    assert result["metrics/isc"] == pytest.approx(direct_isc["inception_score_mean"], rel=1e-9)
    assert result["metrics/isc_std"] == pytest.approx(direct_isc["inception_score_std"], rel=1e-9)
    assert result["metrics/fid"] == pytest.approx(direct_fid["frechet_inception_distance"], rel=1e-9)

    synthetic = tmp_path / "synthetic"
    train_tiny(synthetic, [*QUIET, "train.steps=1"])
    with pytest.raises(UserError, match="scored by its oracle: drop metrics.protocol"):
        evaluate(str(synthetic), protocol="sngan")


@pytest.mark.parametrize("args,message", [
    (["ckpt=x", "metrics.protocol=paper"], "metrics.protocol must be one of default, sngan, mimicry, got 'paper'"),
    (["ckpt=x", "n=500", "metrics.protocol=sngan"], "n does not apply with metrics.protocol=sngan"),
])
def test_bad_protocol_arguments(args, message, capsys):
    from sngan.evaluate import main

    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err


def _folder_run(tmp_path, n_images=12):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(n_images):
        Image.new("RGB", (20, 20), (20 * i, 255 - 20 * i, 0)).save(images / f"{i:02d}.png")
    run = tmp_path / "run"
    train_tiny(run, ["dataset=folder", f"dataset.root={images}", "metrics.during_training=false",
                     "train.batch_size=4", "train.steps=2", "log.every=100", *QUIET], base=TINY_MODEL)
    return run, images


def test_few_samples_give_a_finite_inception_score_and_the_cache_knows_the_data_sets_size(tmp_path):
    run, images = _folder_run(tmp_path)
    cache = tmp_path / "cache"
    result = evaluate(str(run), n=4, feature_extractor="sngan-test-features", cache_root=str(cache))
    assert torch.isfinite(torch.tensor(result["metrics/isc"]))  # 4 samples: 4 splits, not 10 (some empty)
    assert any(cache.rglob("*-n12*"))
    from PIL import Image

    Image.new("RGB", (20, 20)).save(images / "12.png")  # the folder gained an image: new statistics
    evaluate(str(run), n=4, feature_extractor="sngan-test-features", cache_root=str(cache))
    assert any(cache.rglob("*-n13*"))


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning",
                            "ignore::pytest.PytestUnraisableExceptionWarning")  # the stopped workers' loader
def test_an_unreadable_image_read_by_torch_fidelitys_workers_is_one_line(tmp_path, monkeypatch):
    """On a machine of 4 cores or more torch-fidelity reads the real images in worker processes,
    which wrap the error in their traceback: the user sees the image's one line."""
    import os

    run, images = _folder_run(tmp_path)
    (images / "05.png").write_bytes(b"not an image")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    with pytest.raises(UserError) as info:
        evaluate(str(run), n=4, feature_extractor="sngan-test-features", cache_root=str(tmp_path / "cache"))
    assert str(info.value).startswith(f"cannot read image {images / '05.png'}") and "\n" not in str(info.value)
