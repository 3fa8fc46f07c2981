"""The table of settings (sngan/config.py): it covers every key the configs hold, accepts every
preset, and reads a value the same way from Hydra and from a command-line string."""

from __future__ import annotations

import itertools

import pytest
from omegaconf import OmegaConf

from helpers import compose_config
from sngan.config import KEYS, SEED_MAX, check_config, check_saved_config, check_values, integer, number
from sngan.run.errors import UserError

EXPERIMENTS = [None, "embedded", "cifar10_cnn", "cifar10_resnet", "stl10_resnet", "celeba64"]
DATASETS = [None, "synthetic", "cifar10", "stl10", "celeba", "folder"]


@pytest.mark.parametrize("experiment,dataset,model", list(itertools.product(EXPERIMENTS, DATASETS, [None, "cnn", "resnet"])))
def test_every_preset_is_declared_and_valid(experiment, dataset, model):
    overrides = [f"{k}={v}" for k, v in (("experiment", experiment), ("dataset", dataset), ("model", model)) if v]
    cfg = compose_config(overrides + (["dataset.root=/data/images"] if dataset == "folder" else []))
    if experiment in ("stl10_resnet", "celeba64") and model == "cnn":  # Mimicry's ResNet recipes upsample bilinearly
        with pytest.raises(UserError, match=r"^model.upsample=bilinear applies to the resnet generator only"):
            check_config(cfg)
        return
    if (experiment, dataset) == ("celeba64", "cifar10"):  # the preset's 64 px: CIFAR-10 has 32
        with pytest.raises(UserError, match="dataset.resolution must be 32 for cifar10"):
            check_config(cfg)
        return
    check_config(cfg)  # an undeclared key, a missing one or a bad default would be refused here


def test_a_data_set_alone_keeps_its_own_size():
    """The embedded experiment's 16 px and narrow models belong to the synthetic data
    (configs/experiment_data/embedded_synthetic.yaml); STL-10 is 48 px, CIFAR-10 32 px."""
    for dataset, resolution in (("stl10", 48), ("cifar10", 32), ("celeba", 64), ("synthetic", 16)):
        cfg = compose_config([f"dataset={dataset}"])
        narrow = dataset == "synthetic"
        assert cfg.dataset.resolution == resolution, dataset
        assert (cfg.model.g_ch, cfg.model.d_ch, cfg.train.instance_noise) == \
            ((128, 32, 0.2) if narrow else (512, 64, 0.0)), dataset
        check_config(cfg)
    assert compose_config(["experiment=stl10_resnet"]).dataset.resolution == 48


def test_the_celeba_crop_of_celeba64_is_celebas_own():
    assert compose_config(["experiment=celeba64"]).dataset.crop == 178
    assert compose_config(["dataset=celeba"]).dataset.crop == 140
    for dataset in ("folder", "stl10"):  # no crop key: those data sets crop nothing
        cfg = compose_config(["experiment=celeba64", f"dataset={dataset}", "dataset.root=/data/images"])
        assert "crop" not in cfg.dataset and cfg.dataset.resolution == 64


@pytest.mark.parametrize("experiment", ["cifar10_resnet", "stl10_resnet", "celeba64"])
def test_an_optim_setting_on_the_command_line_replaces_a_presets_recipe(experiment):
    """The ResNet presets choose optim=authors_resnet; optim=A replaces it whole (its lr_decay too)."""
    own = compose_config([f"experiment={experiment}"])
    assert (own.optim.lr, own.optim.beta1, own.optim.beta2, own.optim.lr_decay, own.train.n_dis) == \
        (2e-4, 0.0, 0.9, "linear", 5)
    chosen = compose_config([f"experiment={experiment}", "optim=A"])
    assert (chosen.optim.lr, chosen.optim.beta1, chosen.optim.beta2, chosen.optim.lr_decay, chosen.train.n_dis) == \
        (1e-4, 0.5, 0.9, "none", 5)
    assert compose_config([f"experiment={experiment}", "optim=C"]).train.n_dis == 1


def test_a_key_without_a_row_is_refused():
    cfg = compose_config(["+model.width=64"])
    with pytest.raises(UserError, match=r"^model.width is not a setting of sngan"):
        check_config(cfg)


def test_an_interpolation_that_does_not_resolve_names_its_key():
    cfg = compose_config(["optim.lr=${nowhere}"])
    with pytest.raises(UserError, match=r"^optim.lr"):
        check_config(cfg)


@pytest.mark.parametrize("key,text,value", [
    ("train.steps", "12", 12), ("seed", "0", 0), ("seed", str(SEED_MAX), SEED_MAX), ("optim.lr", "2e-4", 2e-4),
    ("optim.beta1", "0", 0.0), ("train.amp", "True", True), ("device", "cuda:1", "cuda:1"),
    ("metrics.inception_weights", "null", None), ("resume", "auto", "auto"), ("resume", "false", False),
])
def test_a_command_line_string_means_what_hydra_would_read(key, text, value):
    assert KEYS[key].parse(key, text) == value


@pytest.mark.parametrize("key,text,message", [
    ("train.steps", "1.5", "train.steps must be an integer >= 1, got 1.5"),
    ("seed", str(SEED_MAX + 1), f"seed must be an integer in [0, {SEED_MAX}], got {SEED_MAX + 1}"),
    ("optim.lr", "nan", "optim.lr must be a positive finite number, got nan"),
    ("optim.beta2", "1", "optim.beta2 must be a number in [0, 1), got 1.0"),
    ("train.amp", "1", "train.amp must be true or false, got '1'"),
])
def test_a_refusal_is_one_line_naming_the_key(key, text, message):
    with pytest.raises(UserError) as refused:
        KEYS[key].parse(key, text)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_spec_wording():
    assert integer(0, 5).requirement == "an integer in [0, 5]"
    assert number(0, low_open=True).requirement == "a positive finite number"
    assert number(0, 1, high_open=True).requirement == "a number in [0, 1)"


def test_rules_use_a_scripts_own_flag_names():
    with pytest.raises(UserError, match=r"^--batch must be >= 2 for the cnn generator, got 1"):
        check_values({"model.name": "cnn", "dataset.resolution": 16, "model.g_ch": 32, "train.batch_size": 1},
                     shown={"train.batch_size": "--batch"})
    check_values({"model.name": "resnet", "dataset.resolution": 32, "model.g_ch": 8, "model.d_ch": 8})


def test_a_saved_config_needs_the_keys_that_rebuild_its_models():
    saved = OmegaConf.to_container(compose_config([]), resolve=True)
    check_saved_config(saved, "ckpt.pt")
    del saved["model"]["g_ch"]
    with pytest.raises(UserError, match=r"^ckpt.pt: its config lacks model.g_ch"):
        check_saved_config(saved, "ckpt.pt")
    saved = {**OmegaConf.to_container(compose_config([]), resolve=True), "from_a_newer_version": 1}
    check_saved_config(saved, "ckpt.pt")  # keys this version does not know are left alone


def test_deterministic_bilinear_upsampling_is_refused_on_cuda_only():
    """torch raises on the CUDA backward of bilinear upsampling under deterministic algorithms: the
    run is refused before it starts, not at its first generator update."""
    import torch

    cfg = compose_config(["model=resnet", "model.upsample=bilinear", "train.deterministic=true"])
    with pytest.raises(UserError, match="train.deterministic=true cannot train model.upsample=bilinear on CUDA"):
        check_config(cfg, torch.device("cuda"))
    check_config(cfg, torch.device("cpu"))
    check_config(compose_config(["model=resnet", "train.deterministic=true"]), torch.device("cuda"))  # nearest


@pytest.mark.parametrize("variant,why", [("naive", "one fixed power step is its definition"),
                                         ("none", "no power iteration")])
def test_a_power_step_count_for_a_variant_without_one_is_refused(variant, why):
    cfg = compose_config([f"variant={variant}", "+variant.n_power_iterations=3"])
    with pytest.raises(UserError, match=f"variant.n_power_iterations does not apply to variant={variant} \\({why}\\)"):
        check_config(cfg)
    check_config(compose_config(["variant=reshaped", "variant.n_power_iterations=3"]))
