"""Metrics of a checkpoint: `python -m sngan.evaluate ckpt=PATH [n=10000] [seed=RUN'S SEED] [key=value ...]`.

Always: D's per-layer sigma/matrix and sigma/operator at the layers' real input sizes, the
certified interval around each operator norm (sigma/operator_lower, _upper, and the relative gap
sigma/operator_gap = upper / lower - 1) and the products. Synthetic data: the oracle metrics.
Real data: FID, IS and KID through torch-fidelity (`metrics.inception_weights=PATH` for offline
weights; the real data's statistics are cached under `metrics.cache_root`). Samples come from the EMA generator when the run kept one, from z
drawn exactly as the trainer draws its evaluation z: with n=log.n_eval and the run's seed (the
defaults are n=10000 and the run's seed) the numbers are the ones TensorBoard shows for that step.
Prints one JSON object as its last line and writes it beside the checkpoint, named by its step
(`checkpoints/step_0001500.metrics.json`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from sngan import checkpoint
from sngan.cli import parse_args, positive_int
from sngan.data import build_dataset
from sngan.errors import UserError
from sngan.metrics import DEFAULT_FEATURE_EXTRACTOR, fidelity_metrics, real_stats_cache_name
from sngan.monitor import generate, layer_input_sizes, monitor_latents, sigma_scalars
from sngan.train import restore_models

CACHE_ROOT = str(Path("~/.cache/sngan/fidelity").expanduser())
USAGE = "usage: python -m sngan.evaluate ckpt=PATH [n=10000] [seed=S] [device=cpu] [key=value ...]"
OPTIONS = {
    "ckpt": (None, "a run folder (its checkpoints/last.pt) or a checkpoint file"),
    "n": ("10000", "generated samples (the trainer evaluates log.n_eval of them, 1000 by default)"),
    "seed": ("run", "seed of the evaluation z: `run` is the run's own seed, as the trainer uses"),
    "device": ("cpu", "cpu, cuda or cuda:N"),
    "dataset.root": ("", "real data: where the data set is, if not where the run found it"),
    "metrics.inception_weights": ("", "real data, offline: a local copy of torch-fidelity's Inception weights"),
    "metrics.feature_extractor": (DEFAULT_FEATURE_EXTRACTOR, "real data: torch-fidelity's feature extractor"),
    "metrics.cache_root": (CACHE_ROOT, "real data: where the real images' feature statistics are cached"),
}


def evaluate(ckpt: str, *, n: int = 10000, seed: int | None = None, device: str = "cpu", dataset_root: str = "",
             inception_weights: str = "", feature_extractor: str = DEFAULT_FEATURE_EXTRACTOR,
             cache_root: str = CACHE_ROOT) -> dict:
    """The metrics of one checkpoint (seed None: the run's), also written beside it as
    step_<step>.metrics.json."""
    path = checkpoint.locate(ckpt)
    state = checkpoint.load(path)
    dev = torch.device(device)
    cfg, G, D, ema = restore_models(state, dev)
    sample_G = ema.module if ema is not None else G
    seed = cfg.seed if seed is None else seed
    if dataset_root:
        cfg.dataset.root = dataset_root
    dataset = build_dataset(cfg.dataset)
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
    out = path.parent / f"step_{state['step']:07d}.metrics.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    same = " (the trainer's own evaluation)" if n == cfg.log.n_eval and seed == cfg.seed else ""
    print(f"{path} at step {state['step']}: {n} samples of the {result['generator']}, z seed {seed}{same}; "
          f"written to {out}", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> None:
    try:
        a = parse_args(sys.argv[1:] if argv is None else argv, OPTIONS, USAGE, __doc__.split("\n\n", 1)[1].strip())
        n = positive_int(a, "n", minimum=2)
        seed = None if a["seed"] == "run" else positive_int(a, "seed", minimum=0)
        result = evaluate(a["ckpt"], n=n, seed=seed, device=a["device"], dataset_root=a["dataset.root"],
                          inception_weights=a["metrics.inception_weights"],
                          feature_extractor=a["metrics.feature_extractor"], cache_root=a["metrics.cache_root"])
    except UserError as e:
        sys.exit(f"error: {e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
