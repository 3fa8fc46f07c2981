"""The trainer end to end: config composition, CLI runs, TensorBoard contents, bad inputs, real data."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from datasets_on_disk import skip_cifar10_md5, write_celeba, write_cifar10, write_stl10
from helpers import (NO_SAMPLES, TINY, TINY_MODEL, assert_identical, compose_config, last_checkpoint, read_scalars,
                     run_cli, train_tiny)
from sngan.run import checkpoint
from sngan.run.errors import RunDiverged, UserError

FAST_LOG = [*NO_SAMPLES, "ckpt.every=1000"]  # and one checkpoint, at the end


# --- configuration ---------------------------------------------------------------------------

def test_default_config_composes_to_the_embedded_run():
    cfg = compose_config()
    assert cfg.variant.name == "reshaped" and cfg.dataset.name == "synthetic"
    assert cfg.model.name == "cnn" and cfg.loss.name == "hinge"
    assert (cfg.dataset.resolution, cfg.train.steps, cfg.train.n_dis, cfg.optim.lr) == (16, 1500, 5, 1e-3)
    assert cfg.train.instance_noise == 0.2
    assert compose_config(["experiment=cifar10_cnn"]).train.instance_noise == 0.0
    assert OmegaConf.is_struct(cfg)


@pytest.mark.parametrize("preset,lr,beta1,beta2,n_dis", [
    ("A", 1e-4, 0.5, 0.9, 5), ("B", 1e-4, 0.5, 0.999, 1), ("C", 2e-4, 0.5, 0.999, 1),
    ("D", 1e-3, 0.5, 0.9, 5), ("E", 1e-3, 0.5, 0.999, 5), ("F", 1e-3, 0.9, 0.999, 5)])
def test_optimizer_presets_are_miyato_table_1(preset, lr, beta1, beta2, n_dis):
    cfg = compose_config([f"optim={preset}"])
    assert (cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2, cfg.train.n_dis) == (lr, beta1, beta2, n_dis)


@pytest.mark.parametrize("variant", ["none", "naive", "reshaped", "builtin", "operator"])
def test_every_variant_composes(variant):
    assert compose_config([f"variant={variant}"]).variant.name == variant


def test_experiments_hold_deltas():
    cfg = compose_config(["experiment=cifar10_cnn"])
    assert cfg.dataset.name == "cifar10" and cfg.model.name == "cnn" and cfg.model.d_ch == 64
    cfg = compose_config(["experiment=cifar10_resnet"])
    assert cfg.model.name == "resnet" and cfg.optim.beta1 == 0.0 and cfg.train.n_dis == 5
    cfg = compose_config(["experiment=celeba64"])
    assert cfg.dataset.name == "celeba" and cfg.dataset.resolution == 64


def test_presets_that_claim_a_published_number_use_the_layout_that_produced_it():
    """The defaults are today's models; each reproducing preset names the layout, widths and batch of its
    reference (README, "Reproducing published numbers")."""
    default = compose_config()
    assert (default.model.layout, default.model.init, default.model.leaky_slope) == ("paper_table", None, None)
    assert default.train.g_batch_size is None
    expected = {  # preset: (model, layout, g_ch, d_ch, upsample, g_batch_size, dataset, resolution, steps)
        "cifar10_cnn": ("cnn", "authors", 512, 64, None, None, "cifar10", 32, 100_000),
        "cifar10_resnet": ("resnet", "authors", 256, 128, "nearest", 128, "cifar10", 32, 50_000),
        "stl10_resnet": ("resnet", "authors", 512, 64, "bilinear", None, "stl10", 48, 100_000),
        "celeba64": ("resnet", "authors", 1024, 64, "bilinear", None, "celeba", 64, 100_000),
    }
    for preset, want in expected.items():
        c = compose_config([f"experiment={preset}"])
        got = (c.model.name, c.model.layout, c.model.g_ch, c.model.d_ch, c.model.get("upsample"),
               c.train.g_batch_size, c.dataset.name, c.dataset.resolution, c.train.steps)
        assert got == want, preset
    assert compose_config(["experiment=celeba64"]).dataset.crop == 178  # Mimicry's CelebA preprocessing
    for preset in ("cifar10_resnet", "stl10_resnet", "celeba64"):  # Gulrajani et al.'s Adam, as the references
        c = compose_config([f"experiment={preset}"])
        assert (c.optim.lr, c.optim.beta1, c.optim.beta2, c.train.n_dis, c.optim.lr_decay) == (2e-4, 0.0, 0.9, 5,
                                                                                              "linear")


def test_struct_mode_refuses_a_mistyped_key():
    with pytest.raises(Exception, match="lrr"):
        compose_config(["optim.lrr=0.1"])


# --- runs ------------------------------------------------------------------------------------

def test_cli_run_writes_tensorboard_samples_and_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = train_tiny(run, ["train.steps=4", "log.every=2", "log.sample_every=2", "log.eval_every=2"], via="cli")
    assert proc.returncode == 0, proc.stderr
    assert (run / "checkpoints" / "last.pt").is_file() and (run / ".hydra" / "config.yaml").is_file()
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["step_0000002.png", "step_0000004.png"]
    scalars = read_scalars(run)
    for tag in ("loss/d", "loss/g", "D/real", "D/fake", "sigma/matrix/conv1", "sigma/operator/conv1",
                "sigma/operator_lower/conv1", "sigma/operator_upper/conv1", "sigma/lipschitz_bound_upper",
                "sigma/lipschitz_bound", "lipschitz/grad_norm", "grad_norm/d", "lr/g",
                "perf/img_per_s", "metrics/clean_rate", "metrics/modes_covered", "metrics/kl_uniform"):
        assert [s for s, _ in scalars[tag]] == [2, 4], tag
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc"):  # the certified interval holds the estimate
        lower, estimate, upper = (scalars[f"sigma/{kind}/{layer}"][-1][1]
                                  for kind in ("operator_lower", "operator", "operator_upper"))
        assert lower <= estimate * (1 + 1e-6) and estimate <= upper * (1 + 1e-6), layer
    assert scalars["sigma/lipschitz_bound_upper"][-1][1] >= scalars["sigma/lipschitz_bound"][-1][1]
    state = last_checkpoint(run)
    assert state["step"] == 4 and state["config"]["variant"]["name"] == "reshaped"


def test_diagnostics_never_change_the_run(tmp_path):
    quiet, loud = tmp_path / "quiet", tmp_path / "loud"
    train_tiny(quiet, ["train.steps=6", "log.every=1000"] + FAST_LOG)
    train_tiny(loud, ["train.steps=6", "log.every=1", "log.sample_every=2", "log.eval_every=3", "ckpt.every=1000"])
    a, b = last_checkpoint(quiet), last_checkpoint(loud)
    for key in ("G", "D"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


@pytest.mark.parametrize("variant", ["operator", "none"])
def test_diagnostics_never_change_operator_or_unnormalized_runs(tmp_path, variant):
    quiet, loud = tmp_path / "q", tmp_path / "l"
    train_tiny(quiet, [f"variant={variant}", "train.steps=3", "log.every=1000"] + FAST_LOG)
    train_tiny(loud, [f"variant={variant}", "train.steps=3", "log.every=1"] + FAST_LOG)
    a, b = last_checkpoint(quiet)["D"], last_checkpoint(loud)["D"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigma_signatures_separate_the_variants(tmp_path):
    """naive drifts away from 1; reshaped/builtin hold sigma/matrix at 1; all exceed 1 by the operator norm."""
    common = ["model.d_ch=16", "train.steps=40", "log.every=10", "optim=C"] + FAST_LOG
    sigmas = {}
    for variant in ("naive", "reshaped", "builtin"):
        train_tiny(tmp_path / variant, [f"variant={variant}"] + common)
        sigmas[variant] = read_scalars(tmp_path / variant)
    layers = [t.split("/")[-1] for t in sigmas["naive"] if t.startswith("sigma/matrix/")]
    three_by_three = ["conv1", "conv3", "conv5"]  # 16x16 images: two stages, then the last 3x3
    # one power step per update tracks sigma to a few percent (the random initial spectrum is flat)
    for variant in ("reshaped", "builtin"):
        for layer in layers:
            assert sigmas[variant][f"sigma/matrix/{layer}"][-1][1] == pytest.approx(1.0, abs=5e-2), (variant, layer)
    convs = [layer for layer in layers if layer.startswith("conv")]
    naive = {layer: sigmas["naive"][f"sigma/matrix/{layer}"][-1][1] for layer in convs}
    assert min(naive.values()) > 1.15, naive
    for variant in ("naive", "reshaped", "builtin"):
        for layer in three_by_three:
            assert sigmas[variant][f"sigma/operator/{layer}"][-1][1] > 1.1, (variant, layer)
    assert sigmas["naive"]["sigma/lipschitz_bound"][-1][1] > sigmas["reshaped"]["sigma/lipschitz_bound"][-1][1]


def test_non_finite_loss_stops_the_run_and_keeps_the_good_checkpoint(tmp_path, monkeypatch):
    import sngan.training.step as step

    real_d_loss, calls = step.d_loss, {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        loss = real_d_loss(*args)
        return loss * float("nan") if calls["n"] > 4 else loss

    monkeypatch.setattr(step, "d_loss", poisoned)
    with pytest.raises(RunDiverged, match="non-finite"):
        train_tiny(tmp_path / "run", ["train.steps=10", "train.n_dis=1", "log.every=1000", "ckpt.every=2", *NO_SAMPLES])
    state = last_checkpoint(tmp_path / "run")
    assert state["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["D"].values() if t.is_floating_point())


def test_a_run_folder_is_never_overwritten(tmp_path):
    train_tiny(tmp_path / "run", ["train.steps=1"] + FAST_LOG)
    with pytest.raises(UserError, match="resume=true"):
        train_tiny(tmp_path / "run", ["train.steps=1"] + FAST_LOG)


# --- real-format data through the real loaders ----------------------------------------------

def test_trains_on_cifar10_python_batches(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "cifar")
    skip_cifar10_md5(monkeypatch)
    # `dataset=cifar10` brings its own 32 px (the embedded experiment's 16 px are the synthetic data's)
    base = [item for item in TINY_MODEL if not item.startswith("dataset.resolution=")]
    run = tmp_path / "run"
    train_tiny(run, ["dataset=cifar10", f"dataset.root={tmp_path / 'cifar'}", "dataset.download=false",
                     "metrics.during_training=false", "dataset.num_workers=0", "train.batch_size=4",
                     "train.steps=2", "log.every=1"] + FAST_LOG, base=base)
    assert last_checkpoint(run)["step"] == 2
    assert "metrics/clean_rate" not in read_scalars(run)  # the oracle exists for synthetic data only


def test_stl10_resnet_preset_trains_on_a_generated_stl10_folder_from_the_cli(tmp_path):
    """The issue's command with narrow models (the preset's own widths take a minute a step on a CPU)."""
    write_stl10(tmp_path / "stl", n_unlabeled=16)
    proc = train_tiny(tmp_path / "run", ["experiment=stl10_resnet", f"dataset.root={tmp_path / 'stl'}", "train.steps=2",
                                         "device=cpu", "metrics.during_training=false", "model.g_ch=32", "model.d_ch=4",
                                         "train.batch_size=8", "dataset.num_workers=0", "log.progress=false"],
                      base=[], via="cli")
    assert proc.returncode == 0, proc.stderr
    assert "data stl10 48x48 | model resnet (authors layout)" in proc.stdout
    state = last_checkpoint(tmp_path / "run")
    assert state["step"] == 2 and state["config"]["model"]["upsample"] == "bilinear"
    assert state["G"]["fc.weight"].shape == (6 * 6 * 32, 128)  # Table 5: G starts from 6x6


def test_trains_on_a_celeba_folder_of_jpegs_from_the_cli(tmp_path):
    write_celeba(tmp_path / "celeba", n=8)
    proc = train_tiny(tmp_path / "run", ["dataset=celeba", f"dataset.root={tmp_path / 'celeba'}",
                                         "dataset.resolution=16", "metrics.during_training=false",
                                         "dataset.num_workers=0", "train.batch_size=4", "train.steps=2"],
                      base=TINY_MODEL, via="cli")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


# --- bad input: exit code != 0, a clear message, no traceback --------------------------------

@pytest.mark.parametrize("args,message", [
    (["variant=spectral"], "variant"),
    (["dataset=cifar10", "dataset.root=/nonexistent/cifar", "dataset.download=false",
      "dataset.resolution=32"], "dataset.root"),
    (["train.batch_size=0"], "train.batch_size"),
    (["train.n_dis=0"], "train.n_dis"),
    (["optim.lr=-0.1"], "optim.lr"),
    (["optim.lr=inf"], "optim.lr must be a positive finite number"),
    (["train.instance_noise=nan"], "train.instance_noise must be a finite number"),
    (["optim.lrr=0.1"], "lrr"),
    (["resume=true"], "nothing to resume"),
    (["device=cuda"] if not torch.cuda.is_available() else ["device=tpu"], "device"),
])
def test_bad_input_fails_cleanly(tmp_path, capsys, args, message):
    """Through the command's main and Hydra, in this process (test_bad_input runs some as real commands)."""
    code, err, out = train_tiny(tmp_path / "run", ["train.steps=1", *args], base=TINY_MODEL, via="main", capsys=capsys)
    assert code != 0
    assert message in err
    assert "Traceback" not in err + out


@pytest.mark.parametrize("args,message", [
    (["model.layout=chainer"], "model.layout must be one of paper_table, authors, got 'chainer'"),
    (["model.init=kaiming"], "model.init must be one of xavier, normal or null"),
    (["model.leaky_slope=2"], "model.leaky_slope must be a number in [0, 1)"),
    (["train.g_batch_size=0"], "train.g_batch_size must be an integer >= 1 or null, got 0"),
    (["train.g_batch_size=1"], "train.g_batch_size must be >= 2 for the cnn generator, got 1"),
    (["model=resnet", "model.upsample=cubic"], "model.upsample must be one of nearest, bilinear"),
    (["dataset=celeba", "dataset.crop=-1"], "dataset.crop must be an integer >= 1, got -1"),
    (["model=resnet", "model.layout=authors"], "model.layout=authors: the authors' resnet layout exists at 32, 48, 64 px"),
])
def test_bad_layout_and_batch_keys_are_one_line_user_errors(tmp_path, args, message):
    """(The CLI prints any UserError as one line without a traceback: test_bad_input_fails_cleanly.)"""
    with pytest.raises(UserError) as info:
        train_tiny(tmp_path / "run", ["train.steps=1"] + args, base=TINY_MODEL)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_multirun_sweeps_variants(tmp_path):
    proc = run_cli(["-m", "variant=naive,reshaped"] + TINY + ["train.steps=2", "log.every=1"] + FAST_LOG +
                   [f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    runs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if (p / "checkpoints" / "last.pt").is_file())
    # named by the overrides (sorted by key), never by job number
    assert [name.split(",")[-1] for name in runs] == ["variant=naive", "variant=reshaped"]
    assert all(name.startswith("ckpt.every=1000,dataset.resolution=16,") for name in runs)


# --- fakes per generator update --------------------------------------------------------------

def _tiny_iteration(g_batch_size):
    from sngan.models import build_discriminator, build_generator
    from sngan.training.step import gan_iteration

    torch.manual_seed(0)
    G = build_generator("cnn", resolution=16, z_dim=8, g_ch=16)
    D = build_discriminator("cnn", resolution=16, d_ch=4)
    seen = []
    G.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    real = torch.rand(6, 3, 16, 16) * 2 - 1
    gan_iteration(G, D, opt_g, opt_d, lambda: real, batch_size=6, n_dis=2, loss="hinge", g_batch_size=g_batch_size)
    return seen, G.state_dict(), torch.get_rng_state()


def test_g_batch_size_sets_the_fakes_of_the_generator_update_only():
    default, same, double = _tiny_iteration(None), _tiny_iteration(6), _tiny_iteration(12)
    assert default[0] == same[0] == [6, 6, 6] and double[0] == [6, 6, 12]
    # unset and equal to the batch draw the same numbers: today's runs are unchanged
    assert all(torch.equal(default[1][k], same[1][k]) for k in default[1])
    assert torch.equal(default[2], same[2]) and not torch.equal(default[2], double[2])


def test_g_batch_size_through_the_config(tmp_path):
    default, same, double = tmp_path / "default", tmp_path / "same", tmp_path / "double"
    train_tiny(default, ["train.steps=2"] + FAST_LOG)
    train_tiny(same, ["train.steps=2", "train.g_batch_size=8"] + FAST_LOG)
    train_tiny(double, ["train.steps=2", "train.g_batch_size=16"] + FAST_LOG)
    a, b, c = (last_checkpoint(run)["G"] for run in (default, same, double))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def _drop_saved_keys(ckpt, *keys: str) -> None:
    """Make `ckpt` look written before `keys` (group.key) existed: remove them from its saved config."""
    state = checkpoint.load(ckpt)
    for key in keys:
        group, name = key.split(".")
        del state["config"][group][name]
    checkpoint.atomic_save(state, ckpt)


def test_a_checkpoint_from_before_the_layout_keys_resumes_as_paper_table(tmp_path):
    """Configs saved before model.layout / init / leaky_slope / train.g_batch_size existed count them
    as their defaults: the run continues bit-identical to one that had them all along."""
    straight, old = tmp_path / "straight", tmp_path / "old"
    train_tiny(straight, ["train.steps=4", "optim.lr_decay=linear"] + FAST_LOG)
    train_tiny(old, ["train.steps=4", "optim.lr_decay=linear", "ckpt.every=2"] + NO_SAMPLES)
    ckpt = old / "checkpoints" / "step_0000002.pt"
    _drop_saved_keys(ckpt, "model.layout", "model.init", "model.leaky_slope", "train.g_batch_size")
    train_tiny(tmp_path / "forked", ["train.steps=4", "optim.lr_decay=linear"] + FAST_LOG + [f"resume={ckpt}"],
               command_line=[f"resume={ckpt}"])
    assert_identical(last_checkpoint(tmp_path / "forked"), last_checkpoint(straight))


def test_setting_a_key_the_old_checkpoint_lacks_is_refused_on_resume(tmp_path):
    """The run trained as the key's default; an override by name would change it unnoticed."""
    run = tmp_path / "old"
    train_tiny(run, ["train.steps=2"] + FAST_LOG)
    ckpt = run / "checkpoints" / "last.pt"
    _drop_saved_keys(ckpt, "model.leaky_slope")
    before = ckpt.read_bytes()
    overrides = [f"resume={ckpt}", "train.steps=3", "model.leaky_slope=0.2"]
    with pytest.raises(UserError, match=r"predates model.leaky_slope .*drop those overrides"):
        train_tiny(tmp_path / "forked", FAST_LOG + overrides, command_line=overrides)
    assert ckpt.read_bytes() == before


def test_an_old_resnet_checkpoint_without_the_keys_loads_and_resumes(tmp_path):
    """Forked from a command whose model group differs, the saved config keeps no model.layout at all."""
    from sngan.models import restore_models

    run = tmp_path / "old"
    train_tiny(run, ["model=resnet", "model.g_ch=16", "train.steps=2"] + FAST_LOG)
    ckpt = run / "checkpoints" / "last.pt"
    _drop_saved_keys(ckpt, "model.layout", "model.init", "model.upsample", "train.g_batch_size")
    _, G, D, _ = restore_models(checkpoint.load(ckpt), torch.device("cpu"))  # what sample/evaluate do
    assert D.layout == "paper_table" and D.fc.bias is not None and G.blocks[0].upsample == "nearest"
    train_tiny(tmp_path / "forked", ["train.steps=3"] + FAST_LOG + [f"resume={ckpt}"],
               command_line=[f"resume={ckpt}", "train.steps=3"])
    assert last_checkpoint(tmp_path / "forked")["step"] == 3


def test_the_ema_is_a_copy_of_g_until_it_starts_averaging(tmp_path):
    """Samples, metrics and health read the EMA: before train.ema_start it must be G, not G at its
    initialisation; after it, the average starts from G's weights there."""
    run = tmp_path / "run"
    train_tiny(run, ["train.steps=3", "train.ema_decay=0.5", "train.ema_start=2", "ckpt.every=1", "ckpt.keep=3",
                     "log.every=100", "log.sample_every=100", "log.eval_every=100"])
    snapshots = {step: torch.load(run / "checkpoints" / f"step_{step:07d}.pt", weights_only=False)
                 for step in (2, 3)}
    at_2, at_3 = snapshots[2], snapshots[3]
    for name, value in at_2["G"].items():
        assert torch.equal(at_2["G_ema"][f"module.{name}"], value), name
    weight = "fc.weight"
    expected = torch.lerp(at_2["G"][weight], at_3["G"][weight], 0.5)
    assert torch.equal(at_3["G_ema"][f"module.{weight}"], expected)
