"""Train an experiment preset end to end, evaluate it as the published numbers were measured, and
print them side by side.

    python scripts/reproduce.py stl10_resnet --root data/stl10 --device cuda
    python scripts/reproduce.py cifar10_resnet --root data/cifar10 --device cuda --inception-weights W.pth
    python scripts/reproduce.py celeba64 --root data/celeba --device cuda seed=1     # extra train overrides

Needs a GPU (the presets train 50k-100k generator updates), the data set under --root (CIFAR-10 and
STL-10 are downloaded there when online), torch-fidelity and its Inception weights (downloaded on
first use; offline: --inception-weights PATH). Training runs `python -m sngan.train experiment=NAME`
in --run-dir with resume=auto, so the same command continues an interrupted run and, once it is
complete, only evaluates. The last checkpoint's EMA generator (or G) is then evaluated with each
protocol a published number of the preset was measured with (`python -m sngan.evaluate
metrics.protocol=...`); the comparison is printed and written to the run folder as reproduce.md and
reproduce.json.

Protocols (sample counts: FID and IS depend on them, so numbers compare only at equal counts):
  sngan    Miyato et al. 2018, Appendix B.1, as the authors' code (sngan_projection evaluation.py)
           does it: IS of 50000 generated images in 10 splits of 5000, mean and std over the splits;
           FID of 5000 generated images against 10000 real images (a fixed random subset).
  mimicry  Mimicry's baselines: IS of 50000 generated images in 10 splits; FID of 50000 generated
           images against 50000 real images (all of them when the data set holds fewer).
Both use torch-fidelity's `inception-v3-compat` features (the TF Inception the papers used).

Published numbers per preset:
{published}
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from sngan.run.cli import ArgumentParser, run_main
from sngan.config import KEYS
from sngan.evaluate import CACHE_ROOT, evaluate
from sngan.diagnostics.metrics import DEFAULT_FEATURE_EXTRACTOR
from sngan.diagnostics.published import PUBLISHED


def published_text() -> str:
    lines = []
    for experiment, rows in PUBLISHED.items():
        for row in rows:
            lines.append(f"  {experiment:15s} IS {row.isc}, FID {row.fid} ({row.protocol}): {row.source}")
    return "\n".join(lines)


def train_preset(experiment: str, root: str, run_dir: Path, device: str, overrides: list[str]) -> None:
    """`python -m sngan.train experiment=...` in run_dir (resume=auto: continue or skip a finished run)."""
    command = [sys.executable, "-m", "sngan.train", f"experiment={experiment}", f"dataset.root={root}",
               f"device={device}", f"hydra.run.dir={run_dir}", "resume=auto", *overrides]
    print("training: " + " ".join(command[1:]), flush=True)
    code = subprocess.call(command)
    if code != 0:
        raise SystemExit(code)


def comparison(experiment: str, results: dict[str, dict]) -> list[dict]:
    """One row per published metric: its source and protocol, the published value, the measured one."""
    rows = []
    for ref in PUBLISHED[experiment]:
        measured = results[ref.protocol]
        rows.append({"source": ref.source, "protocol": ref.protocol, "metric": "IS", "published": ref.isc,
                     "measured": f"{measured['metrics/isc']:.2f} ± {measured['metrics/isc_std']:.2f}"})
        rows.append({"source": ref.source, "protocol": ref.protocol, "metric": "FID", "published": ref.fid,
                     "measured": f"{measured['metrics/fid']:.2f}"})
    return rows


def report(experiment: str, run_dir: Path, results: dict[str, dict], rows: list[dict]) -> str:
    step = next(iter(results.values()))["step"]
    lines = [f"experiment={experiment}: {run_dir} at step {step}", "",
             "| published in | protocol | metric | published | measured |", "| --- | --- | --- | ---: | ---: |"]
    lines += [f"| {r['source']} | {r['protocol']} | {r['metric']} | {r['published']} | {r['measured']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python scripts/reproduce.py", description=__doc__.split("\n\n")[0],
                       epilog=__doc__.split("\n\n", 1)[1].format(published=published_text()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=sorted(PUBLISHED), help="the preset (configs/experiment/NAME.yaml)")
    p.add_argument("--root", required=True, help="the data set's folder (dataset.root)")
    p.add_argument("--run-dir", help="the run folder (default: outputs/reproduce/EXPERIMENT)")
    p.add_argument("--device", type=KEYS["device"].arg_type("device"), default="cuda",
                   help="device for training and evaluation (default: cuda)")
    p.add_argument("--inception-weights", default="",
                   help="offline: a local copy of torch-fidelity's Inception weights")
    p.add_argument("--feature-extractor", default=DEFAULT_FEATURE_EXTRACTOR,
                   help=f"torch-fidelity feature extractor (default: {DEFAULT_FEATURE_EXTRACTOR})")
    p.add_argument("--cache-root", default=CACHE_ROOT, help="where real-data feature statistics are cached")
    p.add_argument("--skip-training", action="store_true", help="evaluate the run folder's last checkpoint as it is")
    p.add_argument("overrides", nargs="*", help="extra `key=value` overrides for the training run")
    a = p.parse_intermixed_args(argv)
    run_dir = Path(a.run_dir or f"outputs/reproduce/{a.experiment}").resolve()
    if not a.skip_training:
        train_preset(a.experiment, a.root, run_dir, a.device, a.overrides)
    results = {protocol: evaluate(str(run_dir), device=a.device, dataset_root=a.root,
                                  inception_weights=a.inception_weights, feature_extractor=a.feature_extractor,
                                  cache_root=a.cache_root, protocol=protocol)
               for protocol in dict.fromkeys(ref.protocol for ref in PUBLISHED[a.experiment])}
    rows = comparison(a.experiment, results)
    text = report(a.experiment, run_dir, results, rows)
    (run_dir / "reproduce.md").write_text(text + "\n")
    (run_dir / "reproduce.json").write_text(json.dumps({"experiment": a.experiment, "rows": rows,
                                                        "results": results}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    run_main(main)
