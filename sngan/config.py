"""Every user-facing setting, declared once, and the one pass that checks values against it.

`KEYS` says, per key, what a value must be (type, range, choices); `RULES` are the constraints
that tie keys together (a model that fits the resolution, a batch that batch normalization can
train on, a data set of at least one batch). `check_config` runs both over a composed training
config, before any work; `check_values` over any flat {key: value} (a checkpoint's config, the
flags of sngan.sample / sngan.evaluate / scripts, which name their flags after these keys), and
`Spec.parse` reads a command-line string with the same meaning everywhere. A refusal is one
UserError line: `KEY must be REQUIREMENT, got VALUE`, plus what to do where that is not obvious.

Why a table and not a structured config (dataclasses in Hydra's ConfigStore): Hydra's own type
errors are several lines long and end a whole sweep at composition, where a bad value should
fail only its job; the config groups' options carry different keys (`dataset.size` only for
synthetic data) and experiments are `_global_` deltas, so a schema would need a class per option
and would add keys to today's composed configs; and the same checks must also serve configs that
never pass through Hydra (checkpoints) and the scripts' flags.

Adding a setting: give it a default in configs/ (DESIGN.md, "Compatibility": an old checkpoint
without it must mean today's behaviour) and a row in KEYS; a constraint across keys is a function
in RULES. A composed config holding a key without a row is refused, so a key added to configs/
without one fails tests/test_config.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sngan.run.errors import UserError

SEED_MAX = 2**32 - 1  # numpy's seed range, the narrowest of the RNGs a seed feeds
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_INT_TEXT = re.compile(r"^[+-]?\d+$")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Spec:
    """What one setting's value must be."""

    requirement: str                   # completes "KEY must be ..."
    accepts: Callable[[Any], bool]
    from_text: Callable[[str], Any]    # a command-line string as the value it means
    required: bool = True              # present in every composed training config
    hint: str = ""                     # what to do, when the requirement alone does not say
    resumable: bool = False            # a resume may change it: it leaves the run's maths alone
    default: Any = None                # what a saved config without the key (older than it) meant
    has_default: bool = False          # `default` is set: `upgrade` fills the key in
    options: tuple[str, ...] = ()      # the group options that have the key (empty: all)

    def check(self, key: str, value, shown: str | None = None):
        """`value`, or a UserError naming `shown` (the flag's own name) or `key`."""
        if not self.accepts(value):
            raise UserError(f"{shown or key} must be {self.requirement}, got {_show(value)}"
                            + (f"; {self.hint}" if self.hint else ""))
        return value

    def parse(self, key: str, text: str, shown: str | None = None):
        """A command-line string as a checked value (sngan.sample / sngan.evaluate / scripts)."""
        return self.check(key, self.from_text(text), shown)

    def arg_type(self, key: str) -> Callable[[str], Any]:
        """An argparse `type=`: a refusal names the flag (argparse adds it) and the key."""
        import argparse

        def convert(text: str):
            try:
                return self.parse(key, text)
            except UserError as e:
                raise argparse.ArgumentTypeError(str(e)) from None
        convert.__name__ = key
        return convert


def _show(value) -> str:
    """A value as the user wrote it: YAML's true/false/null, strings quoted."""
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def _int_text(text: str):
    """As YAML reads it: 12 an int, 1.5 a float (refused, but shown as the number it is), else text."""
    return int(text) if _INT_TEXT.match(text.strip()) else _number_text(text)


def _number_text(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _bool_text(text: str):
    return {"true": True, "false": False}.get(text.strip().lower(), text)


def _null_text(text: str):
    return None if text.strip().lower() in ("", "null", "none") else text


def _or_null(spec: Spec, nullable: bool) -> Spec:
    """`spec`, or also null (YAML's null; `null` on a command line) when `nullable`."""
    if not nullable:
        return spec
    return replace(spec, requirement=spec.requirement + " or null", accepts=lambda v: v is None or spec.accepts(v),
                   from_text=lambda t: None if t.strip().lower() in ("null", "none") else spec.from_text(t))


def integer(low: int | None = None, high: int | None = None, *, allowed: tuple[int, ...] = (), hint: str = "",
            required: bool = True, nullable: bool = False) -> Spec:
    if allowed:
        requirement = f"one of {', '.join(map(str, allowed))}"
    elif high is None:
        requirement = f"an integer >= {low}"
    else:
        requirement = f"an integer in [{low}, {high}]"
    ok = lambda v: _is_int(v) and (not allowed or v in allowed) and (low is None or v >= low) \
        and (high is None or v <= high)
    return _or_null(Spec(requirement, ok, _int_text, required, hint), nullable)


def number(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False,
           hint: str = "", required: bool = True, nullable: bool = False) -> Spec:
    """A finite number in the interval; NaN and infinities never pass."""
    if high == math.inf:
        requirement = "a positive finite number" if (low, low_open) == (0, True) else \
            f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        requirement = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    ok = lambda v: _is_number(v) and math.isfinite(v) and (v > low if low_open else v >= low) \
        and (v < high if high_open else v <= high)
    return _or_null(Spec(requirement, ok, _number_text, required, hint), nullable)


def boolean(required: bool = True) -> Spec:
    return Spec("true or false", lambda v: isinstance(v, bool), _bool_text, required)


def choice(*options: str, required: bool = True, nullable: bool = False, hint: str = "") -> Spec:
    spec = Spec(f"one of {', '.join(options)}", lambda v: isinstance(v, str) and v in options, str.strip, required, hint)
    return _or_null(spec, nullable)


def text(*, nullable: bool = False, required: bool = True, what: str = "a non-empty string") -> Spec:
    ok = lambda v: (nullable and v is None) or (isinstance(v, str) and v.strip() != "" and "\0" not in v)
    return Spec(what + (" or null" if nullable else ""), ok, _null_text if nullable else str, required)


def seed() -> Spec:
    return integer(0, SEED_MAX, hint="numpy's seed range")


def resumable(spec: Spec) -> Spec:
    """`spec` for a key a resume may change (cadences, speed switches, paths, the device)."""
    return replace(spec, resumable=True)


def since(default, spec: Spec, options: tuple[str, ...] = ()) -> Spec:
    """`spec` for a key added after checkpoints were written (or one that only `options` of its group
    have): a config without it means `default`."""
    return replace(spec, default=default, has_default=True, options=options)


# --- the settings ----------------------------------------------------------------------------------

def _known(names_of: str) -> tuple[str, ...]:
    """The names a group offers, from the code that implements them (imported late: no cycles)."""
    if names_of == "variant":
        from sngan.spectral import VARIANTS
        return tuple(VARIANTS)
    if names_of == "dataset":
        from sngan.data import DATASETS
        return tuple(DATASETS)
    from sngan.models.nets import INITS, LAYOUTS, MODELS, RESOLUTIONS, UPSAMPLING
    return tuple({"model": MODELS, "resolution": RESOLUTIONS, "layout": LAYOUTS, "init": INITS,
                  "upsample": UPSAMPLING}[names_of])


def _keys() -> dict[str, Spec]:
    """Every key a composed training config may hold. A new key: a row here, its default in configs/;
    required=False for a key that only some options of a group have."""
    path = lambda **kw: text(what="a path", **kw)
    return {
        "seed": seed(),
        "device": resumable(Spec("auto, cpu, cuda or cuda:N", lambda v: isinstance(v, str) and bool(_DEVICE.match(v)),
                                 str.strip)),
        "resume": resumable(Spec("false, true, auto, or a run folder or checkpoint to fork",
                                 lambda v: v is None or isinstance(v, bool) or (isinstance(v, str) and v.strip() != ""),
                                 lambda t: _bool_text(t) if t.strip().lower() in ("true", "false") else t)),

        "variant.name": choice(*_known("variant")),
        "variant.n_power_iterations": integer(1, required=False),

        "dataset.name": choice(*_known("dataset")),
        "dataset.root": resumable(path(nullable=True)),
        "dataset.resolution": integer(allowed=_known("resolution"),
                                      hint="the models are built for 4*2**k pixels, and for 48 (STL-10)"),
        "dataset.num_workers": resumable(integer(0)),
        "dataset.download": resumable(boolean(required=False)),
        "dataset.size": integer(1, required=False),
        "dataset.seed": integer(0, SEED_MAX, required=False, hint="numpy's seed range"),
        "dataset.crop": integer(1, required=False, hint="the side of the centre square cut from CelebA's 178x218 images"),

        "model.name": choice(*_known("model")),
        "model.z_dim": integer(1),
        "model.g_ch": integer(1),
        "model.d_ch": integer(1),
        # Not required although both model options have them: a resume whose command chose the other
        # model keeps the saved group, and a checkpoint from before these keys has none.
        "model.layout": since("paper_table", choice(*_known("layout"), required=False)),
        "model.init": since(None, choice(*_known("init"), required=False, nullable=True,
                                         hint="null takes the layout's")),
        "model.leaky_slope": since(None, number(0, 1, high_open=True, required=False, nullable=True,
                                                hint="null takes the layout's (paper_table 0.1, authors 0.2)"),
                                   options=("cnn",)),
        "model.upsample": since("nearest", choice(*_known("upsample"), required=False), options=("resnet",)),
        "loss.name": choice("hinge", "bce"),

        "train.steps": resumable(integer(1)),  # except under optim.lr_decay=linear: see resumable_key
        "train.batch_size": integer(1),
        "train.g_batch_size": since(None, integer(1, nullable=True, hint="null means train.batch_size")),
        "train.n_dis": integer(1),
        "train.ema_decay": number(0, 1, high_open=True, hint="0 turns the EMA off"),
        "train.ema_start": integer(0),
        "train.instance_noise": number(0, hint="0 turns it off"),
        "train.amp": resumable(since(False, boolean())),
        "train.compile": resumable(since(False, boolean())),
        "train.channels_last": resumable(since(False, boolean())),
        "train.cudnn_benchmark": resumable(boolean()),
        "train.cuda_graph": resumable(since(False, boolean())),
        "train.deterministic": resumable(since(False, boolean())),

        "optim.lr": number(0, low_open=True),
        "optim.beta1": number(0, 1, high_open=True),
        "optim.beta2": number(0, 1, high_open=True),
        "optim.lr_decay": choice("none", "linear"),

        "log.every": resumable(integer(1)),
        "log.sample_every": resumable(integer(1)),
        "log.eval_every": resumable(integer(1)),
        "log.n_eval": resumable(integer(2, hint="KID needs two samples")),
        "log.progress": resumable(boolean()),

        "metrics.during_training": boolean(),
        "metrics.feature_extractor": text(),
        "metrics.inception_weights": resumable(path(nullable=True)),  # where, not which: a copy of the same weights
        "metrics.cache_root": resumable(path()),

        "ckpt.every": resumable(integer(1)),
        "ckpt.keep": resumable(integer(0)),
    }


KEYS: dict[str, Spec] = _keys()


def resumable_key(key: str, saved: Mapping[str, Any]) -> bool:
    """A resume of the saved run (its flat config `saved`) may change `key`. A key this version no
    longer declares counts as its group's (log.*, ckpt.*: every key of the group is resumable)."""
    if key == "train.steps" and saved.get("optim.lr_decay") == "linear":
        return False  # the schedule runs to train.steps: part of the maths
    if key in KEYS:
        return KEYS[key].resumable
    group = [spec.resumable for name, spec in KEYS.items() if name.startswith(key.split(".")[0] + ".")]
    return bool(group) and all(group)


def resumable_summary() -> str:
    """The resumable keys for a message: a group whose keys all are, by its name."""
    shown: list[str] = []
    for key, spec in KEYS.items():
        group = key.split(".")[0]
        whole = "." in key and all(s.resumable for k, s in KEYS.items() if k.startswith(group + "."))
        name = group if whole else key
        if spec.resumable and name not in shown:
            shown.append(name)
    return ", ".join(shown)


def upgrade(tree: dict) -> list[str]:
    """Fill a saved config (a checkpoint's, in place) with the keys added since it was written, as
    their absence meant, where its group's option has them; return the keys it filled."""
    added = []
    for key, spec in KEYS.items():
        group, _, leaf = key.rpartition(".")
        node = tree.get(group) if group else tree
        if (spec.has_default and isinstance(node, dict) and leaf not in node
                and (not spec.options or node.get("name") in spec.options)):
            node[leaf] = spec.default
            added.append(key)
    return added


def setting(cfg, key: str):
    """The value of `key` in a config (a DictConfig or a flat mapping); a key the config lacks
    (another option's, or older than it) as KEYS says its absence means."""
    value = cfg.get(key, _ABSENT) if not isinstance(cfg, DictConfig) else OmegaConf.select(cfg, key, default=_ABSENT)
    if value is not _ABSENT:
        return value
    if not KEYS[key].has_default:
        raise KeyError(key)
    return KEYS[key].default


_ABSENT = object()


# --- rules across keys -----------------------------------------------------------------------------

def _power_steps_fit(values: Mapping[str, Any]) -> str | None:
    """`naive` takes one power step by its definition and `none` takes none: a count would be ignored."""
    variant = values.get("variant.name")
    if variant in ("naive", "none") and values.get("variant.n_power_iterations") is not None:
        return (f"variant.n_power_iterations does not apply to variant={variant} ("
                + ("one fixed power step is its definition" if variant == "naive" else "no power iteration")
                + "): drop it")
    return None


def _models_fit(values: Mapping[str, Any]) -> str | None:
    """G and D build at this resolution, layout and width, and G's batch normalization gets >= 2
    images in each of its batches (D's fakes: train.batch_size; G's update: train.g_batch_size)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    from sngan.models.nets import build_discriminator, build_generator

    name, res = values.get("model.name"), values.get("dataset.resolution")
    if name is None or res is None:
        return None
    layout, init = setting(values, "model.layout"), setting(values, "model.init")
    try:
        with torch.device("meta"):  # shapes only: no memory, no RNG draws
            if "model.d_ch" in values:
                build_discriminator(name, resolution=res, d_ch=values["model.d_ch"], layout=layout, init=init,
                                    leaky_slope=setting(values, "model.leaky_slope"))
            if "model.g_ch" not in values:
                return None
            G = build_generator(name, resolution=res, g_ch=values["model.g_ch"], z_dim=values.get("model.z_dim", 128),
                                layout=layout, init=init, upsample=setting(values, "model.upsample"))
    except ValueError as e:  # the builders name the key and the bound
        return str(e)
    if not any(isinstance(m, _BatchNorm) for m in G.modules()):
        return None
    for key in ("train.batch_size", "train.g_batch_size"):
        batch = values.get(key)
        if batch is not None and batch < 2:
            return (f"{key} must be >= 2 for the {name} generator, got {batch}: its batch normalization "
                    "cannot train on one image per batch")
    return None


def _dataset_fits(values: Mapping[str, Any]) -> str | None:
    name, res, batch = values.get("dataset.name"), values.get("dataset.resolution"), values.get("train.batch_size")
    if name == "cifar10" and res is not None and res != 32:
        return f"dataset.resolution must be 32 for cifar10 (its images are 32x32), got {res}"
    if name == "stl10" and res is not None and res > 96:
        return f"dataset.resolution must be at most 96 for stl10 (its images are 96x96), got {res}"
    if name is not None and name != "celeba" and "dataset.crop" in values:
        return f"dataset.crop applies to dataset=celeba only, not {name}; remove it"
    size = values.get("dataset.size")
    if name == "synthetic" and size is not None and batch is not None and size < batch:
        return f"dataset.size must be at least one batch (train.batch_size={batch}), got {size}"
    return None


def _cuda_graph_fits(values: Mapping[str, Any]) -> str | None:
    """train.cuda_graph replays the eager kernels: torch.compile's own graphs and autocast's weight
    cache (which a replay would not refill) do not combine with it. (Its device and torchrun are
    checked when the run starts: device=auto is only known then.)"""
    if not values.get("train.cuda_graph"):
        return None
    for key in ("train.compile", "train.amp"):
        if values.get(key):
            return f"train.cuda_graph=true does not combine with {key}=true; set one of them to false"
    return None


# Where the run's process stands, known once it starts (check_config's `device` and `world_size`).
DEVICE_TYPE, WORLD_SIZE, BF16 = "run.device_type", "run.world_size", "run.bf16"


def _fits_the_device(values: Mapping[str, Any]) -> str | None:
    """The speed switches on the run's device (checked once the device is known: device=auto)."""
    device = values.get(DEVICE_TYPE)
    if device is None:
        return None
    if values.get("train.amp") and device == "cuda" and not values.get(BF16):
        return "train.amp=true needs a GPU with bf16 support; use train.amp=false"
    if values.get("train.cuda_graph") and device != "cuda":
        return f"train.cuda_graph=true needs a CUDA device (this run's is {device}); use train.cuda_graph=false"
    if (values.get("train.deterministic") and device == "cuda" and values.get("model.name") == "resnet"
            and values.get("model.upsample") == "bilinear"):
        return ("train.deterministic=true cannot train model.upsample=bilinear on CUDA (torch has no deterministic "
                "backward for bilinear upsampling there); use model.upsample=nearest or train.deterministic=false")
    return None


def _splits_over_ranks(values: Mapping[str, Any]) -> str | None:
    """Under torchrun the batches are global: each rank takes an equal share, of at least 2 images
    (G's batch normalization), and a CUDA graph cannot capture DDP's gradient hooks."""
    ranks = values.get(WORLD_SIZE)
    if ranks is None:
        return None
    for key in ("train.batch_size", "train.g_batch_size"):
        batch = values.get(key)
        if batch and batch % ranks:
            kind = "is the global batch" if key == "train.batch_size" else "is global like train.batch_size"
            return f"{key} ({batch}) {kind}: it must split evenly over the {ranks} ranks"
    for key in ("train.batch_size", "train.g_batch_size"):
        batch = values.get(key)
        if batch is not None and batch // ranks < 2:
            return (f"{key} must be >= {2 * ranks} on {ranks} ranks (the global batch; G's batch "
                    f"normalization needs 2 images per rank), got {batch}")
    if values.get("train.cuda_graph"):
        return ("train.cuda_graph=true is not supported under torchrun yet (DDP's gradient hooks cannot be "
                "captured); run one process, or use train.cuda_graph=false")
    return None


RULES: list[Callable[[Mapping[str, Any]], str | None]] = [_power_steps_fit, _models_fit, _dataset_fits,
                                                          _cuda_graph_fits, _fits_the_device, _splits_over_ranks]


# --- the checks ------------------------------------------------------------------------------------

def check_values(values: Mapping[str, Any], shown: Mapping[str, str] | None = None) -> None:
    """Check every key of a flat {key: value} that KEYS declares, then every rule whose keys are
    there. `shown`: the name to report for a key (a script's flag). Raises UserError."""
    shown = shown or {}
    for key, value in values.items():
        if key in KEYS:
            KEYS[key].check(key, value, shown.get(key))
    for rule in RULES:
        message = rule(values)
        if message:
            for key, name in shown.items():  # a script's flag in place of the key it stands for
                message = message.replace(key, name)
            raise UserError(message)


def flatten(tree, prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} of a nested dict (lists and scalars are leaves)."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_values(cfg: DictConfig) -> dict[str, Any]:
    """The flat resolved values of a composed config; an interpolation that does not resolve is a UserError."""
    try:
        tree = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        raise UserError(f"{key}: {' '.join(str(e).split()[:30])}") from None
    tree.pop("hydra", None)
    return flatten(tree)


def check_config(cfg: DictConfig, device: torch.device | None = None, world_size: int | None = None) -> None:
    """Raise UserError (one line, naming the key) for any value of a composed training config the
    run cannot use: an undeclared key, a missing one, a wrong type or range, a rule broken. With the
    run's `device` and `world_size` (once known) also the rules that depend on them."""
    values = config_values(cfg)
    for key, value in values.items():
        if key not in KEYS:
            raise UserError(f"{key} is not a setting of sngan; remove it (README.md, Configuration, lists the keys)")
        if value == "???":
            raise UserError(f"{key} is not set; add {key}=... to the command line")
    missing = [key for key, spec in KEYS.items() if spec.required and key not in values]
    if missing:
        raise UserError(f"{', '.join(missing)} missing from the config; restore {'it' if len(missing) == 1 else 'them'} "
                        "(configs/ holds the defaults)")
    if device is not None:
        values[DEVICE_TYPE] = device.type
        if values.get("train.amp") and device.type == "cuda":  # asked only then: it initializes CUDA
            values[BF16] = torch.cuda.is_bf16_supported()
    if world_size is not None:
        values[WORLD_SIZE] = world_size
    check_values(values)


def resolve_device(name: str, key: str = "device") -> torch.device:
    """`auto` is cuda when available, else cpu; a device that is not there is a UserError."""
    KEYS["device"].check(key, name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= count:
            there = f"only {count} CUDA device(s) here" if count else "no CUDA device is available"
            raise UserError(f"{key}={name} but {there}; use {key}=cpu or {key}=auto")
    return torch.device(name)


# What a checkpoint's config must give to rebuild its models (sample, evaluate, audit, resume).
MODEL_CONFIG_KEYS = ("variant.name", "dataset.name", "dataset.resolution", "model.name", "model.z_dim",
                     "model.g_ch", "model.d_ch", "train.ema_decay", "seed", "log.n_eval")


def check_saved_config(tree: Mapping, source, next_step: str = "pass a checkpoint written by sngan.train") -> None:
    """A checkpoint's saved config: the keys that rebuild its models are there and valid (keys this
    version does not know are left alone: a newer version may have written them). `next_step`:
    what the refusal tells the user to do instead."""
    values = flatten(tree)
    missing = [key for key in MODEL_CONFIG_KEYS if key not in values]
    if missing:
        raise UserError(f"{source}: its config lacks {', '.join(missing)} (a damaged or foreign checkpoint); "
                        f"{next_step}")
    try:
        check_values({k: v for k, v in values.items() if k in KEYS})
    except UserError as e:
        raise UserError(f"{source}: its config is not usable: {e} (an edited checkpoint); {next_step}") from None
