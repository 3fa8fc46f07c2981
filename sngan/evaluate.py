"""Metrics of a checkpoint: `python -m sngan.evaluate ckpt=PATH [n=10000] [seed=RUN'S SEED] [key=value ...]`.

Always: D's per-layer sigma/matrix and sigma/operator at the layers' real input sizes, the
certified interval around each operator norm (sigma/operator_lower, _upper, and the relative gap
sigma/operator_gap = upper / lower - 1) and the products. Synthetic data: the oracle metrics.
Real data: FID, IS and KID through torch-fidelity (`metrics.inception_weights=PATH` for offline
weights; the real data's statistics are cached under `metrics.cache_root`). Samples come from the EMA generator when the run kept one, from z
drawn exactly as the trainer draws its evaluation z: with n=log.n_eval and the run's seed (the
defaults are n=10000 and the run's seed) the numbers are the ones TensorBoard shows for that step.
Prints one JSON object as its last line and writes it beside the checkpoint, named by its step
(`checkpoints/step_0001500.metrics.json`), or to `out=PATH` (a .json file: new, or an earlier
result of this command, never a checkpoint or another record of the run).

`metrics.protocol` (real data) chooses how samples are counted: `default` (the above: n generated
images against all real images; FID, IS, KID), or the protocol a published number was measured with
(the sample counts change FID and IS, so only numbers measured the same way compare):
  sngan    Miyato et al. 2018, Appendix B.1, and the authors' evaluation code: IS of 50000 generated
           images in 10 splits of 5000 (mean and std over the splits); FID of 5000 generated images
           against 10000 real ones.
  mimicry  Mimicry's baselines: IS of 50000 generated images in 10 splits; FID of 50000 generated
           against 50000 real images.
The real images are a fixed random subset when the data set holds more. n does not apply; the
result is written to `checkpoints/step_<step>.<protocol>.metrics.json` (or to `out=PATH`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sngan.run import checkpoint
from sngan.run.cli import parse_args, refuse
from sngan.config import KEYS, SEED_MAX, Spec, choice, integer, resolve_device, text
from sngan.data import build_dataset
from sngan.run.errors import UserError, describe_os_error, fits_in_memory
from sngan.diagnostics.metrics import (DEFAULT_FEATURE_EXTRACTOR, PROTOCOLS, check_feature_extractor, fidelity_metrics,
                           protocol_metrics, real_stats_cache_name)
from sngan.run.paths import writable_file, writable_folder
from sngan.diagnostics.monitor import generate, layer_input_sizes, monitor_latents, sigma_scalars
from sngan.models import restore_models
from sngan.sigma import network_lipschitz_bounds

CACHE_ROOT = str(Path("~/.cache/sngan/fidelity").expanduser())
USAGE = ("usage: python -m sngan.evaluate ckpt=PATH [n=10000] [seed=S] [device=cpu] [metrics.protocol=default] "
         "[key=value ...]")
DEFAULT_PROTOCOL = "default"
_PROTOCOL = choice(DEFAULT_PROTOCOL, *PROTOCOLS)  # an option of this command, not a key of a training config
_RUN_OR_SEED = Spec(f"run or an integer in [0, {SEED_MAX}]",
                    lambda v: v == "run" or KEYS["seed"].accepts(v),
                    lambda t: t.strip() if t.strip() == "run" else KEYS["seed"].from_text(t))
OPTIONS = {
    "ckpt": (None, "a run folder (its checkpoints/last.pt) or a checkpoint file", text(what="a path")),
    "n": ("10000", "generated samples (the trainer evaluates log.n_eval of them, 1000 by default)", integer(2)),
    "seed": ("run", "seed of the evaluation z: `run` is the run's own seed, as the trainer uses", _RUN_OR_SEED),
    "device": ("cpu", "auto, cpu, cuda or cuda:N", KEYS["device"]),
    "out": ("", "the JSON file to write (default: beside the checkpoint, step_<step>[.<protocol>].metrics.json)",
            None),
    "dataset.root": ("", "real data: where the data set is, if not where the run found it", None),
    "metrics.inception_weights": ("", "real data, offline: a local copy of torch-fidelity's Inception weights",
                                  None),
    "metrics.feature_extractor": (DEFAULT_FEATURE_EXTRACTOR, "real data: torch-fidelity's feature extractor",
                                  KEYS["metrics.feature_extractor"]),
    "metrics.cache_root": (CACHE_ROOT, "real data: where the real images' feature statistics are cached",
                           KEYS["metrics.cache_root"]),
    "metrics.protocol": (DEFAULT_PROTOCOL, f"real data: {DEFAULT_PROTOCOL} (n samples; FID, IS, KID) or a published "
                                           f"protocol's sample counts: {', '.join(PROTOCOLS)} (see above)", _PROTOCOL),
}


def evaluate(ckpt: str, *, n: int = 10000, seed: int | None = None, device: str = "cpu", dataset_root: str = "",
             inception_weights: str = "", feature_extractor: str = DEFAULT_FEATURE_EXTRACTOR,
             cache_root: str = CACHE_ROOT, out: str = "", protocol: str = DEFAULT_PROTOCOL) -> dict:
    """The metrics of one checkpoint (seed None: the run's), also written to `out` (default: beside
    it as step_<step>.metrics.json, step_<step>.<protocol>.metrics.json for a published protocol).
    Every input and output is checked before any work."""
    _PROTOCOL.check("metrics.protocol", protocol)
    path = checkpoint.locate(ckpt)
    state = checkpoint.load(path)
    dev = resolve_device(device)
    cfg, G, D, ema = restore_models(state, dev, source=path)
    sample_G = ema.module if ema is not None else G
    seed = cfg.seed if seed is None else seed
    if dataset_root:
        cfg.dataset.root = dataset_root
    suffix = "" if protocol == DEFAULT_PROTOCOL else f".{protocol}"
    out_path = Path(str(out or path.parent / f"step_{state['step']:07d}{suffix}.metrics.json")).expanduser()
    check_out(out_path)  # before writable_file creates its folder
    writable_file(out_path, "out")
    dataset = build_dataset(cfg.dataset)
    oracle = getattr(dataset, "oracle", None)
    if oracle is not None and protocol != DEFAULT_PROTOCOL:
        raise UserError(f"metrics.protocol={protocol} counts samples for FID and IS on real data; the "
                        f"{cfg.dataset.name} data is scored by its oracle: drop metrics.protocol")
    if oracle is None:  # real data: the extractor, its weights and the cache first
        check_feature_extractor(feature_extractor, inception_weights or None)
        writable_folder(cache_root, "metrics.cache_root")
    res = cfg.dataset.resolution
    result = {"checkpoint": str(path), "step": state["step"], "variant": cfg.variant.name,
              "dataset": cfg.dataset.name, "n": n, "z_seed": seed,
              "generator": "EMA of G" if ema is not None else "G"}
    sigmas = sigma_scalars(D, layer_input_sizes(D, (3, res, res), dev), tol=1e-6)
    result.update(sigmas)
    result.update({key.replace("operator_upper", "operator_gap"): upper / sigmas[key.replace("upper", "lower")] - 1
                   for key, upper in sigmas.items() if key.startswith("sigma/operator_upper/")})
    result["lipschitz/network_lower"], result["lipschitz/network_upper"] = network_lipschitz_bounds(D, (3, res, res))
    cache_name = real_stats_cache_name(cfg.dataset.name, cfg.dataset.get("root", ""), res, feature_extractor,
                                       cfg.dataset.get("crop"), len(dataset))
    fidelity = dict(cache_name=cache_name, cache_root=Path(cache_root), device=dev,
                    feature_extractor=feature_extractor, weights=inception_weights or None, seed=seed)
    if oracle is not None:
        _, z = monitor_latents(seed, G.z_dim, n)
        images = generate(sample_G, z.to(dev)).cpu()
        result.update({f"metrics/{k}": v for k, v in oracle.oracle_metrics(images).items()})
    elif protocol == DEFAULT_PROTOCOL:
        result.update({f"metrics/{k}": v for k, v in fidelity_metrics(sample_G, dataset, n=n, **fidelity).items()})
    else:
        values = protocol_metrics(sample_G, dataset, PROTOCOLS[protocol], **fidelity)
        result["protocol"] = values.pop("protocol")
        del result["n"]  # the protocol's counts replace it
        result.update({f"metrics/{k}": v for k, v in values.items()})
    try:
        checkpoint.atomic_write_text(out_path, json.dumps(result, indent=2) + "\n")
    except OSError as e:  # the disk filled up meanwhile
        raise UserError(f"out={out_path}: cannot write {describe_os_error(e)}; free space or pass another out=") from None
    print(f"{path} at step {state['step']}: {_counted(result, protocol)} "
          f"of the {result['generator']}, z seed {seed}{_own(result, protocol, cfg, seed)}; written to {out_path}",
          file=sys.stderr)
    return result


def check_out(out: Path) -> None:
    """`out` is a .json file, new or an earlier result of this command: never a checkpoint or another
    record of the run, which writing the metrics over would destroy."""
    if out.suffix.lower() != ".json":
        raise UserError(f"out={out}: the metrics are written as JSON: name a .json file, e.g. "
                        f"out={out.with_suffix('.json')}")
    if out.is_file():
        try:
            earlier = json.loads(out.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            earlier = None
        if not isinstance(earlier, dict) or "checkpoint" not in earlier:
            raise UserError(f"out={out} already exists and is not an earlier result of sngan.evaluate: "
                            "choose another out, or move that file away first")


def _counted(result: dict, protocol: str) -> str:
    """How the samples were counted, for the closing line."""
    if protocol == DEFAULT_PROTOCOL:
        return f"{result['n']} samples"
    p = result["protocol"]
    return (f"protocol {protocol}: IS of {p['isc_samples']} samples in {p['isc_splits']} splits, FID of "
            f"{p['fid_generated']} samples against {p['fid_real']} real images")


def _own(result: dict, protocol: str, cfg, seed: int) -> str:
    """Whether the numbers are the trainer's own evaluation (same n and z)."""
    if protocol == DEFAULT_PROTOCOL and result["n"] == cfg.log.n_eval and seed == cfg.seed:
        return " (the trainer's own evaluation)"
    return ""


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        a = parse_args(argv, OPTIONS, USAGE, __doc__.split("\n\n", 1)[1].strip())
        if a["metrics.protocol"] != DEFAULT_PROTOCOL and any(item.startswith("n=") for item in argv):
            raise UserError(f"n does not apply with metrics.protocol={a['metrics.protocol']}, whose sample counts "
                            "are fixed (--help lists them): drop n=")
        seed = None if a["seed"] == "run" else a["seed"]
        if a["metrics.protocol"] == DEFAULT_PROTOCOL:
            what, fix = f"the samples (n={a['n']}) or the models", "use a smaller n"
        else:
            what = f"the samples of metrics.protocol={a['metrics.protocol']} or the models"
            fix = "its counts are fixed: use a machine or device with more memory"
        with fits_in_memory(what, fix):
            result = evaluate(a["ckpt"], n=a["n"], seed=seed, device=a["device"], dataset_root=a["dataset.root"],
                              inception_weights=a["metrics.inception_weights"],
                              feature_extractor=a["metrics.feature_extractor"], cache_root=a["metrics.cache_root"],
                              out=a["out"], protocol=a["metrics.protocol"])
    except UserError as e:
        refuse(e)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
