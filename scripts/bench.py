"""Speed and memory of one training iteration, per variant, against a textbook SNGAN loop.

    python scripts/bench.py                                   # SNGAN CNN, paper widths, batch 64, CPU
    python scripts/bench.py --g-ch 128 --d-ch 32 --resolution 16 --n-dis 5 --json bench.json

In one process, interleaved so that machine noise hits every configuration alike: the time per
iteration (n_dis D updates + 1 G update, sngan.training.step.gan_iteration, on a fixed in-memory batch) of
every variant, relative to `none`; the aten ops one warm iteration dispatches (CPU profiler,
nested ops included); the cost of one round of the trainer's diagnostics (per-layer
sigmas, gradient norms) spread over the default logging interval; images per second; and a
"textbook" loop written the naive way (torch.nn.utils.spectral_norm hooks, no
parametrize.cached) with the same models and batch. Peak memory is the peak RSS (CPU) or max
allocated (GPU) of a separate process per configuration, since a process's peak only grows.
--amp, --compile and --channels-last apply the trainer's switches of the same names to the
variants; the textbook loop stays plain float32 eager. On a GPU, --cuda-graph adds every variant
again as one replayed CUDA graph per iteration (train.cuda_graph; rows named `<variant>+graph`),
every row gains the CUDA kernels per iteration and the GPU's busy time (torch.profiler), and
--deterministic turns on train.deterministic for all rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from sngan.run.cli import ArgumentParser, run_main
from sngan.config import KEYS, check_values, integer, resolve_device
from sngan.run.checkpoint import atomic_write_text
from sngan.run.errors import UserError
from sngan.run.paths import writable_file
from sngan.training.graphed import GraphedIteration
from sngan.models import MODELS, build_discriminator, build_generator
from sngan.diagnostics.monitor import layer_input_sizes
from sngan.diagnostics.profiling import (aten_ops_per_iteration, diagnostics_seconds, gpu_profile,
                                         interleaved_seconds, peak_memory_mb)
from sngan.spectral import VARIANTS, apply_spectral_norm, normalized_layers
from sngan.training.step import apply_speed_switches, gan_iteration
from sngan.training.determinism import set_determinism
from sngan.training.optim import adam_options

TEXTBOOK = "textbook"
GRAPHED = "+graph"  # a variant's row with the iteration replayed as a CUDA graph


def build(args, variant: str, device: torch.device):
    torch.manual_seed(0)
    G = build_generator(args.model, resolution=args.resolution, g_ch=args.g_ch).to(device)
    D = build_discriminator(args.model, resolution=args.resolution, d_ch=args.d_ch).to(device)
    if variant == TEXTBOOK:
        for _, layer in normalized_layers(D):
            torch.nn.utils.spectral_norm(layer)
    else:
        apply_spectral_norm(D, variant)
    fused = adam_options(device) if variant != TEXTBOOK else {}  # the trainer's Adam; the textbook's plain
    betas = (0.5, 0.999)
    return (G, D, torch.optim.Adam(G.parameters(), 2e-4, betas=betas, **fused),
            torch.optim.Adam(D.parameters(), 2e-4, betas=betas, **fused))


def textbook_iteration(G, D, opt_g, opt_d, real, batch: int, n_dis: int) -> None:
    """The way an SNGAN step is usually written: spectral_norm hooks redo every weight per D call."""
    for _ in range(n_dis):
        fake = G(torch.randn(batch, G.z_dim, device=real.device)).detach()
        loss_d = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake)).mean()
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
    loss_g = -D(G(torch.randn(batch, G.z_dim, device=real.device))).mean()
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()


def make_runner(args, name: str, device: torch.device):
    variant, graphed = name.removesuffix(GRAPHED), name.endswith(GRAPHED)
    G, D, opt_g, opt_d = build(args, variant, device)
    real = torch.rand(args.batch, 3, args.resolution, args.resolution, device=device) * 2 - 1
    if variant == TEXTBOOK:  # always the plain float32 eager loop
        return lambda: textbook_iteration(G, D, opt_g, opt_d, real, args.batch, args.n_dis), (G, D)
    layer_input_sizes(D, (3, args.resolution, args.resolution), device)  # as the trainer does first
    apply_speed_switches(G, D, channels_last=args.channels_last, compile=args.compile)  # as the trainer
    if args.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    amp_dtype = torch.bfloat16 if args.amp else None
    iteration = lambda next_real: gan_iteration(G, D, opt_g, opt_d, next_real, batch_size=args.batch,
                                                n_dis=args.n_dis, loss="hinge", amp_dtype=amp_dtype)
    if graphed:
        graph = GraphedIteration(iteration, modules=(G, D), optimizers=(opt_g, opt_d))
        return (lambda: graph([real] * args.n_dis)), (G, D)
    return (lambda: iteration(lambda: real)), (G, D)


def child_peak_memory_mb(variant: str) -> float:
    """Peak memory of a fresh process that runs `variant` for a few iterations."""
    cmd = [sys.executable, __file__, "--memory-of", variant, *sys.argv[1:]]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def memory_child(args, variant: str, device: torch.device) -> None:
    print(peak_memory_mb(make_runner(args, variant, device)[0], 3, device))


def parse_args() -> argparse.Namespace:
    key = lambda name: KEYS[name].arg_type(name)
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="cnn", choices=MODELS)
    p.add_argument("--resolution", type=key("dataset.resolution"), default=32)
    p.add_argument("--g-ch", type=key("model.g_ch"), default=512)
    p.add_argument("--d-ch", type=key("model.d_ch"), default=64)
    p.add_argument("--batch", type=key("train.batch_size"), default=64)
    p.add_argument("--n-dis", type=key("train.n_dis"), default=1)
    p.add_argument("--steps", type=integer(1).arg_type("steps"), default=5, help="iterations per timed block")
    p.add_argument("--repeats", type=integer(1).arg_type("repeats"), default=3,
                   help="interleaved timed blocks per configuration")
    p.add_argument("--log-every", type=key("log.every"), default=50,
                   help="logging interval the diagnostics are spread over")
    p.add_argument("--device", type=key("device"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast for the variants (train.amp)")
    p.add_argument("--compile", action="store_true", help="torch.compile G and D (train.compile)")
    p.add_argument("--channels-last", action="store_true", help="NHWC models and batch (train.channels_last)")
    p.add_argument("--cuda-graph", action="store_true", help="also each variant as a CUDA graph (train.cuda_graph)")
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (train.deterministic)")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = p.parse_args()
    check_values({"model.name": args.model, "dataset.resolution": args.resolution, "model.g_ch": args.g_ch,
                  "model.d_ch": args.d_ch, "train.batch_size": args.batch},
                 shown={"model.name": "--model", "dataset.resolution": "--resolution", "model.g_ch": "--g-ch",
                        "model.d_ch": "--d-ch", "train.batch_size": "--batch"})
    return args


def measure(args, device: torch.device) -> dict:
    """Every configuration's row, interleaved timing first; the diagnostics' cost beside them."""
    names = list(VARIANTS) + [TEXTBOOK] + ([v + GRAPHED for v in VARIANTS] if args.cuda_graph else [])
    runners = {name: make_runner(args, name, device)[0] for name in names}
    times = interleaved_seconds(runners, args.steps, args.repeats, device)
    best = {name: min(t) for name, t in times.items()}
    ops = {name: aten_ops_per_iteration(runners[name]) for name in names}  # warm runners, after timing
    run, (G, D) = make_runner(args, "reshaped", device)
    diag, sigma_s, sigma_first_s = diagnostics_seconds(run, G, D, args.resolution, device,
                                                       steps=args.steps, repeats=args.repeats)
    images = args.batch * args.n_dis
    rows = []
    for name in names:
        row = {"config": name, "s_per_iter": best[name], "median_s_per_iter": statistics.median(times[name]),
               "vs_none": best[name] / best["none"], "img_per_s": images / best[name],
               "aten_ops_per_iter": ops[name], "peak_memory_mb": child_peak_memory_mb(name)}
        if device.type == "cuda":
            kernels, busy = gpu_profile(runners[name])
            row |= {"cuda_kernels_per_iter": kernels, "gpu_busy_s_per_iter": busy, "gpu_busy_share": busy / best[name]}
        if name.endswith(GRAPHED):
            row["vs_none_graphed"] = best[name] / best["none" + GRAPHED]
        rows.append(row)
    return {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "settings": {k: v for k, v in vars(args).items() if k not in ("json", "memory_of")},
            "rows": rows, "diagnostics_s": diag, "sigma_s": sigma_s, "sigma_first_round_s": sigma_first_s,
            "diagnostics_vs_none": diag / best["none"], "sigma_vs_none": sigma_s / best["none"],
            "diagnostics_share_at_log_every": diag / (diag + args.log_every * best["reshaped"])}


def print_result(result: dict, log_every: int, device: torch.device) -> None:
    print(f"{'config':<15} {'s/iter':>8} {'vs none':>8} {'img/s':>8} {'peak MB':>8} {'aten ops':>9}"
          + (f" {'kernels':>8} {'GPU busy':>8}" if device.type == "cuda" else ""))
    for row in result["rows"]:
        gpu = (f" {row['cuda_kernels_per_iter']:>8d} {100 * row['gpu_busy_share']:>7.1f}%"
               if "cuda_kernels_per_iter" in row else "")
        print(f"{row['config']:<15} {row['s_per_iter']:>8.4f} {row['vs_none']:>8.3f} {row['img_per_s']:>8.1f} "
              f"{row['peak_memory_mb']:>8.0f} {row['aten_ops_per_iter']:>9d}{gpu}")
    r = result
    print(f"diagnostics: {r['diagnostics_s']:.3f} s per log = {r['diagnostics_vs_none']:.2f} `none` iterations "
          f"(sigmas and intervals {r['sigma_s']:.3f} s = {r['sigma_vs_none']:.2f}; the first, cold round's "
          f"{r['sigma_first_round_s']:.3f} s) = {100 * r['diagnostics_share_at_log_every']:.1f}% of a run logged "
          f"every {log_every} iterations")


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device, "--device")
    if args.cuda_graph and device.type != "cuda":
        raise UserError(f"--cuda-graph needs a CUDA device (--device is {device.type}); drop --cuda-graph")
    if args.cuda_graph and (args.amp or args.compile):
        raise UserError("--cuda-graph does not combine with --amp or --compile (as train.cuda_graph); drop one")
    if args.json:  # checked now, not after minutes of measuring
        writable_file(args.json, "--json")
    set_determinism(args.deterministic)
    if args.memory_of:
        return memory_child(args, args.memory_of, device)
    result = measure(args, device)
    print_result(result, args.log_every, device)
    if args.json:
        atomic_write_text(Path(args.json).expanduser(), json.dumps(result, indent=2))


if __name__ == "__main__":
    run_main(main)
