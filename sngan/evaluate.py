"""Metrics of a checkpoint: `python -m sngan.evaluate ckpt=PATH [n=10000] [key=value ...]`.

Prints one JSON object as its last line and writes it beside the checkpoint
(`checkpoints/last.pt` -> `checkpoints/last.metrics.json`). Always: D's per-layer sigma/matrix and
sigma/operator at the layers' real input sizes and their product. Synthetic data: the oracle
metrics. Real data: FID, IS and KID through torch-fidelity (`metrics.inception_weights=PATH` for
offline weights; the real data's statistics are cached under `metrics.cache_root`).
Samples come from the EMA generator when the run kept one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from sngan import checkpoint
from sngan.data import build_dataset
from sngan.errors import UserError
from sngan.metrics import DEFAULT_FEATURE_EXTRACTOR, fidelity_metrics, real_stats_cache_name
from sngan.monitor import layer_input_sizes, sigma_scalars
from sngan.sample import generate, parse_args, positive_int
from sngan.train import restore_models

DEFAULTS = {"ckpt": None, "n": "10000", "seed": "0", "device": "cpu", "dataset.root": "",
            "metrics.inception_weights": "", "metrics.feature_extractor": DEFAULT_FEATURE_EXTRACTOR,
            "metrics.cache_root": str(Path("~/.cache/sngan/fidelity").expanduser())}


def evaluate(ckpt: str, *, n: int = 10000, seed: int = 0, device: str = "cpu", dataset_root: str = "",
             inception_weights: str = "", feature_extractor: str = DEFAULT_FEATURE_EXTRACTOR,
             cache_root: str = DEFAULTS["metrics.cache_root"]) -> dict:
    """The metrics of one checkpoint, also written to <checkpoint>.metrics.json."""
    path = checkpoint.locate(ckpt)
    state = checkpoint.load(path)
    dev = torch.device(device)
    cfg, G, D, ema = restore_models(state, dev)
    sample_G = ema.module if ema is not None else G
    if dataset_root:
        cfg.dataset.root = dataset_root
    dataset = build_dataset(cfg.dataset)
    res = cfg.dataset.resolution
    result = {"checkpoint": str(path), "step": state["step"], "variant": cfg.variant.name,
              "dataset": cfg.dataset.name, "n": n}
    result.update(sigma_scalars(D, layer_input_sizes(D, (3, res, res), dev)))
    oracle = getattr(dataset, "oracle", None)
    if oracle is not None:
        images = generate(sample_G, n, seed, device)
        result.update({f"metrics/{k}": v for k, v in oracle.oracle_metrics(images).items()})
    else:
        cache_name = real_stats_cache_name(cfg.dataset.name, cfg.dataset.get("root", ""), res, feature_extractor)
        result.update({f"metrics/{k}": v for k, v in fidelity_metrics(
            sample_G, dataset, n=n, cache_name=cache_name, cache_root=Path(cache_root), device=dev,
            feature_extractor=feature_extractor, weights=inception_weights or None, seed=seed).items()})
    out = path.with_suffix(".metrics.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


USAGE = ("usage: python -m sngan.evaluate ckpt=PATH [n=10000] [seed=0] [device=cpu] [dataset.root=DIR] "
         "[metrics.inception_weights=PATH] [metrics.feature_extractor=NAME] [metrics.cache_root=DIR]")


def main(argv: list[str] | None = None) -> None:
    try:
        a = parse_args(sys.argv[1:] if argv is None else argv, DEFAULTS, USAGE)
        n, seed = positive_int(a, "n", minimum=2), positive_int(a, "seed", minimum=0)
        result = evaluate(a["ckpt"], n=n, seed=seed, device=a["device"], dataset_root=a["dataset.root"],
                          inception_weights=a["metrics.inception_weights"],
                          feature_extractor=a["metrics.feature_extractor"], cache_root=a["metrics.cache_root"])
    except UserError as e:
        sys.exit(f"error: {e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
