"""`python -m sngan.evaluate`: oracle metrics, per-layer sigmas, and the torch-fidelity path."""

from __future__ import annotations

import json

import pytest
import torch
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from conftest import TINY, TINY_MODEL, compose_config, read_scalars, run_cli
from fixtures import skip_cifar10_md5, write_celeba, write_cifar10
from sngan import checkpoint
from sngan.evaluate import evaluate
from sngan.train import train

QUIET = ["log.every=1000", "log.sample_every=1000", "log.eval_every=1000"]


class SmallFeatures(FeatureExtractorBase):
    """A stand-in for Inception (whose weights cannot be downloaded here): fixed random conv features."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        gen = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.head = torch.nn.Linear(16, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)

    @staticmethod
    def get_provided_features_list():
        return ("16", "logits_unbiased")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "16", "kid": "16"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

    def forward(self, x):
        assert x.dtype == torch.uint8
        feats = torch.relu(self.conv(x.float() / 255)).mean(dim=(2, 3)).double()
        out = {"16": feats, "logits_unbiased": self.head(feats.float()).double()}
        return tuple(out[name] for name in self.features_list)


if "sngan-test-features" not in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor("sngan-test-features", SmallFeatures)


def test_cli_prints_json_last_and_writes_it_beside_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(compose_config(TINY + QUIET + ["train.steps=3", "log.every=3", "log.eval_every=3", "seed=5",
                                         "train.ema_decay=0.5"]), run)
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
    train(compose_config(TINY + QUIET + ["train.steps=3", "log.eval_every=3", "seed=5", "train.ema_decay=0.5"]), run)
    evaluate(str(run), n=64)
    evaluate(str(run), n=64, seed=6)
    trainer, same, other = scored
    assert torch.equal(trainer, same) and not torch.allclose(trainer, other)


def test_fid_is_kid_through_torch_fidelity_with_a_stand_in_extractor(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "cifar", n_per_batch=20)
    skip_cifar10_md5(monkeypatch)
    run = tmp_path / "run"
    train(compose_config(TINY_MODEL + QUIET + ["dataset=cifar10", f"dataset.root={tmp_path / 'cifar'}",
                                               "dataset.download=false", "dataset.resolution=32",
                                               "dataset.num_workers=0", "train.steps=2",
                                               "metrics.during_training=false"]), run)
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
    common = TINY_MODEL + ["dataset=cifar10", f"dataset.root={tmp_path / 'cifar'}", "dataset.download=false",
                           "dataset.resolution=32", "dataset.num_workers=0", "train.steps=3",
                           "log.every=1000", "log.sample_every=1000", "log.n_eval=32",
                           "metrics.feature_extractor=sngan-test-features",
                           f"metrics.cache_root={tmp_path / 'cache'}"]
    train(compose_config(common + ["log.eval_every=1"]), tmp_path / "fid")
    train(compose_config(common + ["metrics.during_training=false"]), tmp_path / "plain")
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
    proc = run_cli(TINY_MODEL + ["dataset=celeba", f"dataset.root={tmp_path / 'celeba'}", "dataset.resolution=16",
                                 "dataset.num_workers=0", "train.batch_size=4", "train.steps=2",
                                 "metrics.inception_weights=/nonexistent/weights.pth",
                                 f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "metrics.inception_weights=PATH" in proc.stderr and "metrics.during_training=false" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("args,message", [([], "missing ckpt"), (["ckpt=/nonexistent"], "does not exist"),
                                          (["ckpt=x", "n=1"], "n must be an integer >= 2")])
def test_bad_arguments(tmp_path, args, message):
    proc = run_cli(args, cwd=tmp_path, module="sngan.evaluate")
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
