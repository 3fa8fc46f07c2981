"""What a run shows while it trains: TensorBoard scalars and images, a tqdm bar, sigma diagnostics.

Every diagnostic here leaves the run unchanged: D is measured in eval mode (no power iteration
advanced, no naive division), G samples in eval mode (BatchNorm statistics untouched), random
draws come from the monitor's own generator, and gradients are taken with torch.autograd.grad
with respect to the inputs only (no parameter .grad is written).
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from sngan.linalg.network import NoCertifiedBound, eval_mode, input_shape_from_layers, network_upper_bound
from sngan.run.checkpoint import atomic_write
from sngan.sigma import effective_weight, matrix_sigma, operator_sigma_interval
from sngan.spectral import normalized_layers, reshape_dim


def layer_input_sizes(D: nn.Module, image_shape: tuple[int, ...], device) -> dict[str, tuple[int, ...] | None]:
    """Spatial input size of each normalized layer of D, from one eval-mode probe forward."""
    sizes: dict[str, tuple[int, ...] | None] = {}
    handles = []
    for name, layer in normalized_layers(D):
        def record(module, args, name=name):
            sizes[name] = tuple(args[0].shape[2:]) if args[0].dim() > 2 else None
        handles.append(layer.register_forward_pre_hook(record))
    try:
        with torch.no_grad(), eval_mode(D):
            D(torch.zeros(1, *image_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return sizes


# The logged input-gradient norm is the mean over this many real and as many fake images of the
# batch: the estimate of the whole batch's mean is within about 7% (one standard deviation), while
# the whole batch's mean itself varies 3.5% from batch to batch (scripts/grad_norm_subset.py on the
# embedded default's checkpoints), at a quarter of the cost.
GRAD_NORM_SAMPLES = 16
# Lanczos tolerance of the logged sigma/operator (its residual relative to sigma^2): the estimate is
# then within about 5e-4 of the operator norm, and a Ritz value is never above it (but for float32
# rounding, ~1e-6). The certified interval brackets the true value whatever the tolerance.
LOG_TOL = 1e-3


def sigma_scalars(D: nn.Module, input_sizes: dict[str, tuple[int, ...] | None], *,
                  tol: float = LOG_TOL, vectors: dict | None = None,
                  image_shape: tuple[int, ...] | None = None) -> dict[str, float]:
    """Per layer sigma/matrix/<layer>, sigma/operator/<layer> and its certified interval
    sigma/operator_lower/<layer>, sigma/operator_upper/<layer>; sigma/lipschitz_bound, the product
    of the estimates; sigma/lipschitz_bound_upper, a certified bound on D's Lipschitz constant
    composed through D's graph from the layers' upper bounds (sngan.linalg.network: for a plain
    chain with 1-Lipschitz activations, their product; NaN, with a warning naming the op, for a D
    holding an op without a stated bound). `image_shape`: one input's shape (default: read off
    D's first layer and `input_sizes`). `vectors`: Lanczos warm starts kept between calls by the
    caller (the Monitor)."""
    scalars: dict[str, float] = {}
    bound = 1.0
    uppers: dict[str, tuple] = {}
    for name, layer in normalized_layers(D):
        scalars[f"sigma/matrix/{name}"] = matrix_sigma(effective_weight(layer), reshape_dim(layer),
                                                        vectors=vectors, key=("matrix", id(layer)))
        op, lower, upper = operator_sigma_interval(layer, input_sizes[name], tol=tol, vectors=vectors)
        scalars[f"sigma/operator/{name}"] = op
        scalars[f"sigma/operator_lower/{name}"] = lower
        scalars[f"sigma/operator_upper/{name}"] = upper
        bound *= op
        uppers[name] = (_size(input_sizes[name]), upper)
    scalars["sigma/lipschitz_bound"] = bound
    scalars["sigma/lipschitz_bound_upper"] = _composed_upper(D, input_sizes, uppers, tol, vectors, image_shape)
    return scalars


def _size(size) -> tuple[int, ...] | None:
    return None if size is None else tuple(int(s) for s in size)


def _composed_upper(D: nn.Module, input_sizes: dict, uppers: dict, tol: float, vectors: dict | None,
                    image_shape: tuple[int, ...] | None) -> float:
    """D's certified Lipschitz bound through its graph, from the layers' upper bounds already
    computed (a layer called on another input size gets its own)."""
    def layer_upper(name: str, layer: nn.Module, size) -> float:
        if name in uppers and uppers[name][0] == _size(size):
            return uppers[name][1]
        return operator_sigma_interval(layer, size, tol=tol, vectors=vectors)[2]

    shape = image_shape or input_shape_from_layers(D, input_sizes)
    try:
        if shape is None:
            raise NoCertifiedBound("no certified bound: D's input shape is not known (pass image_shape)")
        return network_upper_bound(D, shape, layer_upper)
    except NoCertifiedBound as e:
        warnings.warn(f"sigma/lipschitz_bound_upper: {e}; logged as NaN", stacklevel=3)
        return math.nan


def input_grad_norm(D: nn.Module, images: Tensor) -> float:
    """Mean over samples of ||grad_x D(x)||, in eval mode, writing no parameter gradient."""
    with eval_mode(D), torch.enable_grad():
        x = images.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x).sum(), x)
    return float(grad.flatten(1).norm(dim=1).mean())


@torch.no_grad()
def generate(G: nn.Module, z: Tensor, batch: int = 256) -> Tensor:
    """G(z) in batches, in eval mode (BatchNorm statistics untouched)."""
    with eval_mode(G):
        return torch.cat([G(z[i:i + batch]) for i in range(0, len(z), batch)])


def save_grid(images: Tensor, path: Path, label: str | None = None, min_size: int = 64) -> Tensor:
    """A square-ish grid of images in [-1, 1], each enlarged with nearest-neighbour pixels to at
    least `min_size` px (16 px samples are unreadable at their own size), with an optional label
    strip on top; written as a PNG, atomically (a full disk leaves the earlier grid, not an empty
    file). Returns the grid as a (3, H, W) tensor in [0, 1]."""
    from torchvision.utils import make_grid, save_image  # here: importing torchvision takes seconds

    scale = max(1, math.ceil(min_size / images.shape[-1]))
    if scale > 1:
        images = torch.nn.functional.interpolate(images.float(), scale_factor=scale, mode="nearest")
    grid = make_grid(images, nrow=math.ceil(math.sqrt(len(images))), normalize=True, value_range=(-1, 1),
                     padding=2 * scale)
    if label:
        grid = _with_label(grid, label)
    atomic_write(path, lambda f: save_image(grid, f, format="PNG"))
    return grid


def _with_label(grid: Tensor, label: str) -> Tensor:
    from PIL import Image, ImageDraw
    from torchvision.transforms.functional import pil_to_tensor

    strip = Image.new("RGB", (grid.shape[-1], 16), "white")
    ImageDraw.Draw(strip).text((4, 2), label, fill="black")
    return torch.cat([pil_to_tensor(strip).float() / 255, grid.cpu()], dim=1)


def global_grad_norm(module: nn.Module) -> float:
    """L2 norm of all parameter gradients of `module` (0 if none)."""
    grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...] by step} from the event files directly in run_dir.

    Sorted by step: the reader visits files by name, and two writers opened by one process within
    the same second are named by a counter whose text order need not be their time order.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: sorted((e.step, e.value) for e in acc.Scalars(tag)) for tag in acc.Tags()["scalars"]}


def monitor_latents(seed: int, z_dim: int, n_eval: int, n_grid: int = 64) -> tuple[Tensor, Tensor]:
    """(the sample grids' z, the evaluations' z) of a run with this seed, from the monitor's own
    RNG (the run's global RNG is never drawn from). sngan.evaluate draws the same z, so it
    reproduces the trainer's numbers."""
    gen = torch.Generator().manual_seed(seed + 1_000_003)
    return torch.randn(n_grid, z_dim, generator=gen), torch.randn(n_eval, z_dim, generator=gen)


class Monitor:
    """TensorBoard writer, progress bar, fixed-z sample grids and oracle metrics for one run."""

    def __init__(self, run_dir: Path, *, total_steps: int, start_step: int, z_dim: int, device,
                 seed: int, n_samples: int = 64, n_eval: int = 1000, oracle=None,
                 enabled_bar: bool = True):
        self.run_dir = Path(run_dir)
        (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
        # A checkpoint at step N is written after step N's logs: on resume, purge the events a killed
        # run wrote after it (steps > N), so TensorBoard shows each step once.
        self.writer = SummaryWriter(str(self.run_dir), purge_step=start_step + 1 if start_step else None)
        # Moved every step (tqdm redraws at most every `mininterval` s); in a log file, a line a minute,
        # named by the run folder (sweep jobs share one console).
        interactive = sys.stderr.isatty()
        self.bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=interactive, unit="step",
                        desc=self.run_dir.name,
                        disable=not enabled_bar, mininterval=0.5 if interactive else 60, smoothing=0.1)
        self.device, self.oracle, self.n_eval = device, oracle, n_eval
        self.fixed_z, self.eval_z = (z.to(device) for z in monitor_latents(seed, z_dim, n_eval, n_samples))
        self._last_time, self._last_step = time.perf_counter(), start_step
        self.lanczos_vectors: dict = {}  # warm starts for the operator norms, never kept with the model

    def images_per_second(self, step: int, images_per_step: int) -> float:
        now = time.perf_counter()
        rate = (step - self._last_step) * images_per_step / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        return rate

    def sigma_layout(self) -> None:
        """TensorBoard CUSTOM SCALARS: every layer's sigma/matrix on one chart, every layer's
        sigma/operator on another, so a variant's signature shows at a glance."""
        charts = {"sigma/matrix (all layers)": ["Multiline", [r"sigma/matrix/.*"]],
                  "sigma/operator (all layers)": ["Multiline", [r"sigma/operator/.*"]],
                  "Lipschitz": ["Multiline", [r"sigma/lipschitz_bound", r"lipschitz/grad_norm"]],
                  "health flags": ["Multiline", [r"health/.*(violated|suspected|growing)"]]}
        self.writer.add_custom_scalars({"signature": charts})

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def advance(self, step: int) -> None:
        """One more step on the bar (its time estimate follows the recent rate)."""
        self.bar.update(step - self.bar.n)

    def progress(self, values: dict[str, float]) -> None:
        """The latest logged numbers beside the bar, shown at its next redraw."""
        self.bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in values.items()}, refresh=False)

    def sample_grid(self, step: int, G: nn.Module) -> Path:
        path = self.run_dir / "samples" / f"step_{step:07d}.png"
        self.writer.add_image("samples", save_grid(generate(G, self.fixed_z), path, label=f"step {step}"), step)
        return path

    def oracle_metrics(self, G: nn.Module) -> dict[str, float]:
        if self.oracle is None:
            return {}
        images = generate(G, self.eval_z).cpu()
        return {f"metrics/{k}": float(v) for k, v in self.oracle.oracle_metrics(images).items()}

    def hparams(self, hparams: dict, metrics: dict[str, float]) -> None:
        self.writer.add_hparams(hparams, {f"final/{k}": v for k, v in metrics.items()},
                                run_name="hparams")

    def close(self) -> None:
        self.bar.close()
        self.writer.close()
