"""Bad input, case by case: every refusal is an exit code, one line naming the key or path, no
traceback, and an existing run folder left byte-identical (its .hydra/ records included).

The cases run in this process through the entry points' own main functions (Hydra's included),
which keeps some 90 of them fast; a handful run as real subprocesses at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

from helpers import TINY, TINY_MODEL, call, run_script, snapshot, train_tiny

BAD_IMAGE_WEIGHTS = b"not a weights file" * 50


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """An existing run (through the CLI, so it has .hydra/ and train.log), damaged copies of its
    checkpoint, a small image folder, a plain file, a garbage weights file."""
    root = tmp_path_factory.mktemp("bad")
    run = root / "run"
    code, printed, _ = train_tiny(run, ["train.steps=2", "log.every=1", "log.sample_every=2", "log.eval_every=2",
                                        "ckpt.every=1", "ckpt.keep=3"], via="main")
    assert code == 0, printed
    assert (run / "checkpoints" / "last.pt").is_file() and (run / ".hydra" / "config.yaml").is_file()

    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    damaged = root / "damaged"
    damaged.mkdir()
    without_g = {k: v for k, v in state.items() if k != "G"}
    without_config = {k: v for k, v in state.items() if k != "config"}
    from sngan.models import build_generator
    other_model = {**state, "G": build_generator("cnn", resolution=16, g_ch=64, z_dim=128).state_dict()}
    bad_config = {**state, "config": {**state["config"], "model": {**state["config"]["model"], "g_ch": "wide"}}}
    for name, obj in (("without_g", without_g), ("without_config", without_config),
                      ("other_model", other_model), ("bad_config", bad_config)):
        torch.save(obj, damaged / f"{name}.pt")
    (damaged / "garbage.pt").write_bytes(b"\x00garbage" * 100)
    damaged_run = root / "damaged_run"  # a run whose last.pt lost its G: its snapshots are named instead
    shutil.copytree(run, damaged_run)
    torch.save(without_g, damaged_run / "checkpoints" / "last.pt")
    ruined_run = root / "ruined_run"  # every checkpoint of the run damaged: it must start again
    shutil.copytree(run, ruined_run)
    for path in (ruined_run / "checkpoints").glob("*.pt"):
        path.write_bytes(b"\x00garbage" * 100)
    (damaged / "empty.pt").write_bytes(b"")
    torch.save({"weights": torch.zeros(3)}, damaged / "foreign.pt")

    images = root / "images"
    images.mkdir()
    for i in range(8):
        Image.new("RGB", (20, 20), (30 * i, 0, 0)).save(images / f"{i}.png")
    few = root / "few_images"
    few.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20), (0, 30 * i, 0)).save(few / f"{i}.png")
    (root / "a_file").write_text("I am a file\n")
    (root / "weights.pth").write_bytes(BAD_IMAGE_WEIGHTS)
    (root / "log_is_a_folder" / "train.log").mkdir(parents=True)
    (root / "folder.png").mkdir()
    return {"root": root, "run": run, "damaged": damaged, "damaged_run": damaged_run, "ruined_run": ruined_run,
            "images": images, "few": few}


# (entry point, arguments, what the one line must name). {run}, {root}, {damaged}, {images},
# {few} are filled in from the fixture; a train case runs against the existing run folder unless
# it names another hydra.run.dir.
TRAIN_VALUES = [
    ("train.steps=0", "train.steps"), ("train.steps=-5", "train.steps"), ("train.steps=abc", "train.steps"),
    ("train.steps=1.5", "train.steps"), ("train.steps=nan", "train.steps"), ("train.steps=1e3", "train.steps"),
    ("train.batch_size=0", "train.batch_size"), ("train.batch_size=1", "train.batch_size"),
    ("train.batch_size=two", "train.batch_size"), ("train.n_dis=0", "train.n_dis"),
    ("train.ema_decay=1.0", "train.ema_decay"), ("train.ema_decay=-0.1", "train.ema_decay"),
    ("train.ema_start=-1", "train.ema_start"), ("train.instance_noise=nan", "train.instance_noise"),
    ("train.instance_noise=-1", "train.instance_noise"), ("train.instance_noise=inf", "train.instance_noise"),
    ("train.amp=yes", "train.amp"), ("train.compile=1", "train.compile"),
    ("train.channels_last=null", "train.channels_last"),
    ("train.cuda_graph=maybe", "train.cuda_graph"), ("train.deterministic=2", "train.deterministic"),
    ("optim.lr=0", "optim.lr"), ("optim.lr=inf", "optim.lr"), ("optim.lr=-1e-4", "optim.lr"),
    ("optim.lr=fast", "optim.lr"), ("optim.lr=nan", "optim.lr"), ("optim.beta1=1.0", "optim.beta1"),
    ("optim.beta2=1.5", "optim.beta2"), ("optim.beta1=-0.1", "optim.beta1"), ("optim.beta2=nan", "optim.beta2"),
    ("optim.lr_decay=cosine", "optim.lr_decay"),
    ("log.every=0", "log.every"), ("log.sample_every=-1", "log.sample_every"), ("log.eval_every=x", "log.eval_every"),
    ("log.n_eval=1", "log.n_eval"), ("log.progress=maybe", "log.progress"),
    ("ckpt.every=0", "ckpt.every"), ("ckpt.keep=-1", "ckpt.keep"), ("ckpt.keep=1.5", "ckpt.keep"),
    ("seed=-1", "seed"), ("seed=4294967296", "seed"), ("seed=abc", "seed"), ("seed=1e3", "seed"),
    ("device=tpu", "device"), ("device=cuda:99", "device=cuda:99"), ("resume=1", "resume"),
    ("variant.name=bogus", "variant.name"), ("variant.n_power_iterations=0", "variant.n_power_iterations"),
    ("dataset.resolution=17", "dataset.resolution"), ("dataset.resolution=0", "dataset.resolution"),
    ("dataset.size=4", "dataset.size"), ("dataset.size=0", "dataset.size"),
    ("dataset.num_workers=-1", "dataset.num_workers"), ("dataset.seed=-1", "dataset.seed"),
    ("model.g_ch=0", "model.g_ch"), ("model.g_ch=2", "model.g_ch"), ("model.d_ch=-8", "model.d_ch"),
    ("model.z_dim=0", "model.z_dim"), ("model.name=vgg", "model.name"), ("loss.name=wgan", "loss.name"),
    ("metrics.during_training=sometimes", "metrics.during_training"), ("+train.foo=1", "train.foo"),
    ("~optim.lr", "optim.lr"), ("dataset.root=''", "dataset.root"),
    ("model.layout=chainer", "model.layout"), ("model.init=kaiming", "model.init"),
    ("model.leaky_slope=1", "model.leaky_slope"), ("model.leaky_slope=nan", "model.leaky_slope"),
    ("train.g_batch_size=0", "train.g_batch_size"), ("train.g_batch_size=1", "train.g_batch_size"),
    ("train.g_batch_size=2.5", "train.g_batch_size"),
]
CASES = [("train", [value], named) for value, named in TRAIN_VALUES] + [
    ("train", ["dataset=cifar10", "dataset.resolution=16"], "dataset.resolution"),
    ("train", ["dataset=cifar10", "dataset.download=maybe"], "dataset.download"),
    ("train", ["dataset=stl10", "dataset.resolution=128"], "dataset.resolution"),
    ("train", ["dataset=celeba", "dataset.crop=0"], "dataset.crop"),
    ("train", ["model=resnet", "model.layout=authors"], "model.layout=authors"),
    ("train", ["model=resnet", "model.upsample=cubic"], "model.upsample"),
    ("train", ["experiment=stl10_resnet", "dataset=stl10", "model=cnn"], "model.upsample"),
    ("train", ["resume=true", "train.steps=0"], "train.steps"),
    ("train", ["train.cuda_graph=true", "train.compile=true"], "train.cuda_graph=true does not combine with train.compile"),
    ("train", ["train.cuda_graph=true", "train.amp=true"], "train.cuda_graph=true does not combine with train.amp"),
    # refused inside the trainer, after the folder is locked: the run is still untouched
    ("train", [], "already holds a run"),
    ("train", ["resume=true", "variant=naive"], "variant.name"),
    ("train", ["resume=true", "optim.lr=0.5"], "optim.lr"),
    ("train", ["resume=true", "dataset.resolution=32"], "dataset.resolution"),
    ("train", ["resume={root}/nonexistent"], "does not exist; resume= takes a run folder (one holding "
     "checkpoints/last.pt) or a checkpoint file; run without resume to start fresh"),
    ("train", ["resume={run}", "model.d_ch=16", "hydra.run.dir={root}/fork_drift"],
     "these settings differ from the saved run: model.d_ch"),  # a complete run: refused all the same
    ("train", ["resume={run}", "hydra.run.dir={root}/fork_complete"],
     "checkpoints/last.pt is already at step 2 of train.steps=2: pass a larger train.steps to continue it in"),
    ("train", ["train.cuda_graph=true", "device=cpu", "hydra.run.dir={root}/new6"],
     "train.cuda_graph=true needs a CUDA device (this run's is cpu); use train.cuda_graph=false"),
    ("train", ["resume=true", "train.cuda_graph=true", "device=cpu"], "train.cuda_graph=true needs a CUDA device"),
    ("train", ["resume={damaged}/garbage.pt", "hydra.run.dir={root}/fork_garbage"], "garbage.pt"),
    ("train", ["resume={ruined_run}", "hydra.run.dir={root}/fork_ruined"],
     "no readable snapshot is beside it in {ruined_run}/checkpoints: the run must start again, e.g. "
     "python -m sngan.train"),
    ("train", ["resume={damaged}/without_g.pt", "hydra.run.dir={root}/fork_without_g"], "lacks G"),
    ("train", ["resume={damaged}/other_model.pt", "train.steps=4", "hydra.run.dir={root}/fork_other"],
     "G weights do not fit"),
    ("train", ["resume={damaged}/bad_config.pt", "hydra.run.dir={root}/fork_bad_config"], "model.g_ch"),
    ("train", ["resume=true", "hydra.run.dir={root}/no_run_here"], "resume=true: nothing to resume"),
    ("train", ["dataset=folder", "hydra.run.dir={root}/new1"], "dataset.root"),
    ("train", ["log.n_eval=1000000000000", "hydra.run.dir={root}/oom_run"],  # after its start: the folder stays
     "the run's tensors do not fit in memory ("),
    ("train", ["dataset=folder", "dataset.root={root}/nonexistent", "hydra.run.dir={root}/new2"], "dataset.root"),
    ("train", ["dataset=folder", "dataset.root={few}", "dataset.resolution=16", "metrics.during_training=false",
               "hydra.run.dir={root}/new3"], "train.batch_size"),
    ("train", ["dataset=cifar10", "dataset.root={root}/nonexistent", "dataset.download=false",
               "dataset.resolution=32", "hydra.run.dir={root}/new4"], "dataset.root"),
    ("train", ["dataset=folder", "dataset.root={images}", "dataset.resolution=16",
               "metrics.inception_weights={root}/weights.pth", "hydra.run.dir={root}/new5"], "weights.pth"),
    ("train", ["hydra.run.dir={root}/a_file/run"], "a_file"),
    ("train", ["hydra.run.dir={root}/a_file"], "a_file"),
    ("train", ["hydra.run.dir=/proc/sngan_run"], "/proc/sngan_run"),
    ("train", ["hydra.run.dir="], "hydra.run.dir is empty"),
    ("train", ['hydra.run.dir="~/sngan_tilde_run"'], "e.g. hydra.run.dir=$HOME/sngan_tilde_run"),
    ("train", ["hydra.run.dir={root}/log_is_a_folder"], "train.log"),
    # sngan.sample
    ("sample", [], "missing ckpt"),
    ("sample", ["ckpt={root}/nonexistent"], "nonexistent does not exist; ckpt= takes a run folder (one holding "
     "checkpoints/last.pt) or a checkpoint file"),
    ("sample", ["ckpt={root}"], "run folder(s) below it: pass one, e.g. ckpt={root}/"),
    ("sample", ["ckpt={images}"], "no checkpoint in {images} (expected checkpoints/last.pt); ckpt= takes"),
    ("sample", ["ckpt={damaged}/garbage.pt"], "garbage.pt is not a readable checkpoint"),
    ("sample", ["ckpt={damaged}/garbage.pt"], "no readable snapshot is beside it in {damaged}: pass a run folder, "
     "or a checkpoint that sngan.train wrote (in a run's checkpoints/)"),
    ("sample", ["ckpt={ruined_run}"], "the run must start again, e.g. python -m sngan.train "),
    ("sample", ["ckpt={ruined_run}"], "hydra.run.dir={ruined_run}-again"),
    ("sample", ["ckpt={damaged}/empty.pt"], "empty.pt"),
    ("sample", ["ckpt={damaged}/foreign.pt"], "foreign.pt"),
    ("sample", ["ckpt={damaged}/without_g.pt"], "lacks G"),
    ("sample", ["ckpt={damaged}/without_config.pt"], "lacks config"),
    ("sample", ["ckpt={damaged}/other_model.pt"], "G weights do not fit"),
    ("sample", ["ckpt={damaged}/bad_config.pt"], "model.g_ch"),
    ("sample", ["ckpt={damaged_run}"], "pass another snapshot of the run instead, e.g. {damaged_run}/checkpoints/step_0000002.pt"),
    ("sample", ["ckpt={run}", "n=0"], "n must be"), ("sample", ["ckpt={run}", "n=many"], "n must be"),
    ("sample", ["ckpt={run}", "seed=-1"], "seed"), ("sample", ["ckpt={run}", "seed=x"], "seed"),
    ("sample", ["ckpt={run}", "device=tpu"], "device"), ("sample", ["ckpt={run}", "device=cuda:99"], "device=cuda:99"),
    ("sample", ["ckpt={run}", "out={root}/folder.png"], "folder.png"),
    ("sample", ["ckpt={run}", "out={root}/a_file/grid.png"], "a_file"),
    ("sample", ["ckpt={run}", "out={root}/a_file"], "a_file"),
    ("sample", ["ckpt={run}", "out=/proc/sngan.png"], "/proc/sngan.png cannot be written: /proc ("),
    ("sample", ["ckpt={run}", "bogus=1"], "bogus"),
    ("sample", ["ckpt={run}", "n=1000000000000"], "n=1000000000000 images do not fit in memory"),
    # sngan.evaluate
    ("evaluate", ["ckpt={run}", "n=1"], "n must be"), ("evaluate", ["ckpt={run}", "seed=-2"], "seed"),
    ("evaluate", ["ckpt={damaged}/garbage.pt"], "garbage.pt"),
    ("evaluate", ["ckpt={root}/nonexistent"], "does not exist; ckpt= takes a run folder"),
    ("evaluate", ["ckpt={damaged}/without_g.pt"], "lacks G (a damaged or edited checkpoint); no readable snapshot "
     "is beside it"),
    ("evaluate", ["ckpt={damaged}/without_config.pt"], "lacks config"),
    ("evaluate", ["ckpt={damaged_run}/checkpoints/last.pt"], "e.g. {damaged_run}/checkpoints/step_0000002.pt"),
    ("evaluate", ["ckpt={run}", "device=tpu"], "device"),
    ("evaluate", ["ckpt={run}", "metrics.protocol=paper"], "metrics.protocol"),
    ("evaluate", ["ckpt={run}", "n=500", "metrics.protocol=sngan"], "n does not apply"),
    ("evaluate", ["ckpt={run}", "out=/proc/sngan.json"], "/proc/sngan.json"),
    ("evaluate", ["ckpt={run}", "out={root}/a_file/m.json"], "a_file"),
    ("evaluate", ["ckpt={run}", "out={run}/checkpoints/last.pt"], "the metrics are written as JSON"),
    ("evaluate", ["ckpt={run}", "out={run}/train.log"], "name a .json file"),
    ("evaluate", ["ckpt={run}", "out={run}/status.json"], "is not an earlier result of sngan.evaluate"),
    ("evaluate", ["ckpt={run}", "n=1000000000000"], "the samples (n=1000000000000) or the models do not fit in "
     "memory"),
    # sngan.audit
    ("audit", ["{run}", "--input-shape", "3,10000000,10000000"], "inputs of shape 3,10000000,10000000 do not fit in"),
    ("audit", ["{damaged}/without_g.pt"], "lacks G"),
    ("audit", ["{damaged}/other_model.pt"], "G weights do not fit"),
]


@pytest.mark.parametrize("entry,args,named", CASES, ids=[f"{e}:{' '.join(a) or '-'}" for e, a, _ in CASES])
def test_bad_input(place, capsys, entry, args, named):
    fill = {k: str(v) for k, v in place.items()}
    args = [a.format(**fill) for a in args]
    named = named.format(**fill)
    if entry == "train" and not any(a.startswith("hydra.run.dir=") for a in args):
        args = args + [f"hydra.run.dir={place['run']}"]
    if entry == "train":  # the tiny run (dataset.size is the synthetic data's own key), unless the case says
        base = (TINY_MODEL if any(a.startswith("dataset=") for a in args) else TINY) + ["train.steps=2"]
        given = {a.split("=")[0].lstrip("+~") for a in args}
        args = [a for a in base if a.split("=")[0] not in given] + args
    before = snapshot(place["run"])
    code, printed, out = call(entry, args, capsys)
    assert code != 0, printed
    assert "Traceback" not in printed + out
    line = printed.strip()
    assert line.startswith("error: ") and "\n" not in line, printed
    assert named in line
    assert snapshot(place["run"]) == before
    for new in place["root"].glob("new*"):  # a refused new run leaves nothing behind
        assert not new.exists(), sorted(p.name for p in new.iterdir())


@pytest.mark.parametrize("args,named", [(["optim.lrr=0.1"], "lrr"), (["variant=spectral"], "variant"),
                                        (["train.steps=="], "train.steps")])
def test_hydras_own_refusals_name_the_key_and_touch_nothing(place, capsys, args, named):
    """A mistyped key, an unknown option, bad override syntax: Hydra's few lines, no traceback."""
    before = snapshot(place["run"])
    code, printed, _ = train_tiny(place["run"], args, via="main", capsys=capsys)
    assert code != 0 and named in printed and "Traceback" not in printed
    assert snapshot(place["run"]) == before


def test_resume_without_a_run_folder_is_refused_before_hydra_makes_one(tmp_path, monkeypatch, capsys):
    """resume=true with no hydra.run.dir: the default folder is a new dated one, which cannot hold the run."""
    monkeypatch.chdir(tmp_path)
    code, printed, _ = call("train", TINY + ["train.steps=2", "resume=true"], capsys)
    assert code == 2 and "Traceback" not in printed and printed.strip().count("\n") == 0
    assert "and none was given" in printed and "add hydra.run.dir=RUN_FOLDER" in printed
    assert list(tmp_path.iterdir()) == []


def test_a_refusal_removes_only_a_folder_its_own_command_created(place, tmp_path, capsys):
    """A folder that existed before the command (the user's own, empty) stays, with the log Hydra wrote."""
    mine = tmp_path / "mine"
    mine.mkdir()
    code, printed, _ = call("train", TINY_MODEL + ["dataset=folder", f"dataset.root={place['root']}/nonexistent",
                                             f"hydra.run.dir={mine}"], capsys)
    assert code == 2 and "dataset.root" in printed and mine.is_dir()
    out = tmp_path / "new_folder" / "m.txt"  # evaluate's out= refused before its folder is made
    code, printed, _ = call("evaluate", [f"ckpt={place['run']}", f"out={out}"], capsys)
    assert code == 2 and "name a .json file" in printed and not out.parent.exists()


def test_only_allocation_failures_count_as_out_of_memory():
    from sngan.run.errors import is_out_of_memory

    for text in ("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 512000000000000 bytes", "CUDA out of memory. Tried to allocate 20.00 GiB",
                 "MPS backend out of memory", "std::bad_alloc"):
        assert is_out_of_memory(RuntimeError(text)), text
    assert is_out_of_memory(MemoryError())
    for text in ("NCCL error: unhandled system error, NCCL version 2.21.5: System call (e.g. socket, malloc) failed",
                 "expandable_segments is not supported by this allocator"):
        assert not is_out_of_memory(RuntimeError(text)), text
    assert not is_out_of_memory(ValueError("out of memory"))


def test_a_second_trainer_is_refused_at_once_naming_the_first(place, capsys):
    """The run lock, as a second trainer sees it while this process holds the folder."""
    import os

    from sngan.run.lock import run_lock

    before = snapshot(place["run"])
    with run_lock(place["run"]):
        code, printed, _ = train_tiny(place["run"], ["resume=true", "train.steps=4"], via="main", capsys=capsys)
    assert code == 2 and f"is in use by another trainer (pid {os.getpid()})" in printed
    assert printed.strip().count("\n") == 0
    assert snapshot(place["run"]) == before


@pytest.mark.parametrize("script,args,named", [
    ("sigma_table.py", ["--resolution", "17"], "--resolution"),
    ("bench.py", ["--batch", "0"], "--batch"),
    ("bench.py", ["--steps", "1", "--repeats", "1", "--json", "{root}/a_file/bench.json"], "--json"),
    ("reproduce.py", ["stl10_resnet", "--root", "{root}/stl", "--device", "tpu"], "--device"),
    ("compare_variants.py", ["--seeds", "one", "--out", "{root}/report"], "--seeds"),
    ("compare_variants.py", ["--collect", "/nonexistent/sweep", "--out", "{root}/report"], "/nonexistent/sweep"),
    ("grad_norm_subset.py", ["{root}", "--subset", "65"], "--subset"),
    ("grad_norm_subset.py", ["{root}/not_a_run"], "not_a_run has no checkpoints"),
])
def test_scripts_refuse_in_one_line_at_once(place, script, args, named):
    args = [a.format(root=place["root"]) for a in args]
    proc = run_script(script, args, timeout=60)  # a hang (bench.py with a zero batch once did) fails here
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and named in proc.stderr


@pytest.mark.parametrize("module,args,named", [
    ("sngan.train", ["optim.beta2=1", "hydra.run.dir={run}"], "optim.beta2"),
    ("sngan.train", ["resume=true", "variant=none", "hydra.run.dir={run}"], "variant.name"),
    ("sngan.sample", ["ckpt={damaged}/garbage.pt"], "garbage.pt"),
])
def test_a_few_as_real_commands(place, module, args, named):
    args = [a.format(**{k: str(v) for k, v in place.items()}) for a in args]
    before = snapshot(place["run"])
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120,
                          cwd=place["root"])
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and named in proc.stderr
    assert snapshot(place["run"]) == before
