"""Metrics of a checkpoint: `python -m sngan.evaluate ckpt=PATH [n=10000] [seed=RUN'S SEED] [key=value ...]`.

Always: D's per-layer sigma/matrix and sigma/operator at the layers' real input sizes, the
certified interval around each operator norm (sigma/operator_lower, _upper, and the relative gap
sigma/operator_gap = upper / lower - 1) and the products. Synthetic data: the oracle metrics.
Real data: FID, IS and KID through torch-fidelity (`metrics.inception_weights=PATH` for offline
weights; the real data's statistics are cached under `metrics.cache_root`). Samples come from the EMA generator when the run kept one, from z
drawn exactly as the trainer draws its evaluation z: with n=log.n_eval and the run's seed (the
defaults are n=10000 and the run's seed) the numbers are the ones TensorBoard shows for that step.
Prints one JSON object as its last line and writes it beside the checkpoint, named by its step
(`checkpoints/step_0001500.metrics.json`), or to `out=PATH`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


from sngan import checkpoint
from sngan.cli import parse_args
from sngan.config import KEYS, SEED_MAX, Spec, integer, resolve_device, text
from sngan.data import build_dataset
from sngan.errors import UserError, describe_os_error
from sngan.metrics import DEFAULT_FEATURE_EXTRACTOR, check_feature_extractor, fidelity_metrics, real_stats_cache_name
from sngan.paths import writable_file, writable_folder
from sngan.monitor import generate, layer_input_sizes, monitor_latents, sigma_scalars
from sngan.train import restore_models

CACHE_ROOT = str(Path("~/.cache/sngan/fidelity").expanduser())
USAGE = "usage: python -m sngan.evaluate ckpt=PATH [n=10000] [seed=S] [device=cpu] [key=value ...]"
_RUN_OR_SEED = Spec(f"run or an integer in [0, {SEED_MAX}]",
                    lambda v: v == "run" or KEYS["seed"].accepts(v),
                    lambda t: t.strip() if t.strip() == "run" else KEYS["seed"].from_text(t))
OPTIONS = {
    "ckpt": (None, "a run folder (its checkpoints/last.pt) or a checkpoint file", text(what="a path")),
    "n": ("10000", "generated samples (the trainer evaluates log.n_eval of them, 1000 by default)", integer(2)),
    "seed": ("run", "seed of the evaluation z: `run` is the run's own seed, as the trainer uses", _RUN_OR_SEED),
    "device": ("cpu", "auto, cpu, cuda or cuda:N", KEYS["device"]),
    "out": ("", "the JSON file to write (default: beside the checkpoint, step_<step>.metrics.json)", None),
    "dataset.root": ("", "real data: where the data set is, if not where the run found it", None),
    "metrics.inception_weights": ("", "real data, offline: a local copy of torch-fidelity's Inception weights",
                                  None),
    "metrics.feature_extractor": (DEFAULT_FEATURE_EXTRACTOR, "real data: torch-fidelity's feature extractor",
                                  KEYS["metrics.feature_extractor"]),
    "metrics.cache_root": (CACHE_ROOT, "real data: where the real images' feature statistics are cached",
                           KEYS["metrics.cache_root"]),
}


def evaluate(ckpt: str, *, n: int = 10000, seed: int | None = None, device: str = "cpu", dataset_root: str = "",
             inception_weights: str = "", feature_extractor: str = DEFAULT_FEATURE_EXTRACTOR,
             cache_root: str = CACHE_ROOT, out: str = "") -> dict:
    """The metrics of one checkpoint (seed None: the run's), also written to `out` (default: beside
    it as step_<step>.metrics.json). Every input and output is checked before any work."""
    path = checkpoint.locate(ckpt)
    state = checkpoint.load(path)
    dev = resolve_device(device)
    cfg, G, D, ema = restore_models(state, dev, source=path)
    sample_G = ema.module if ema is not None else G
    seed = cfg.seed if seed is None else seed
    if dataset_root:
        cfg.dataset.root = dataset_root
    out_path = writable_file(out or path.parent / f"step_{state['step']:07d}.metrics.json", "out")
    dataset = build_dataset(cfg.dataset)
    if getattr(dataset, "oracle", None) is None:  # real data: the extractor, its weights and the cache first
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
    oracle = getattr(dataset, "oracle", None)
    if oracle is not None:
        _, z = monitor_latents(seed, G.z_dim, n)
        images = generate(sample_G, z.to(dev)).cpu()
        result.update({f"metrics/{k}": v for k, v in oracle.oracle_metrics(images).items()})
    else:
        cache_name = real_stats_cache_name(cfg.dataset.name, cfg.dataset.get("root", ""), res, feature_extractor)
        result.update({f"metrics/{k}": v for k, v in fidelity_metrics(
            sample_G, dataset, n=n, cache_name=cache_name, cache_root=Path(cache_root), device=dev,
            feature_extractor=feature_extractor, weights=inception_weights or None, seed=seed).items()})
    try:
        checkpoint.atomic_write_text(out_path, json.dumps(result, indent=2) + "\n")
    except OSError as e:  # the disk filled up meanwhile
        raise UserError(f"out={out_path}: cannot write {describe_os_error(e)}; free space or pass another out=") from None
    same = " (the trainer's own evaluation)" if n == cfg.log.n_eval and seed == cfg.seed else ""
    print(f"{path} at step {state['step']}: {n} samples of the {result['generator']}, z seed {seed}{same}; "
          f"written to {out_path}", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> None:
    try:
        a = parse_args(sys.argv[1:] if argv is None else argv, OPTIONS, USAGE, __doc__.split("\n\n", 1)[1].strip())
        seed = None if a["seed"] == "run" else a["seed"]
        result = evaluate(a["ckpt"], n=a["n"], seed=seed, device=a["device"], dataset_root=a["dataset.root"],
                          inception_weights=a["metrics.inception_weights"],
                          feature_extractor=a["metrics.feature_extractor"], cache_root=a["metrics.cache_root"],
                          out=a["out"])
    except UserError as e:
        sys.exit(f"error: {e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
