"""``synthetic``: an offline GAN benchmark of coloured shapes with an exact oracle.

The data set has a finite number of modes, M = 4 shapes x 7 colours x 4 positions = 112.
Each mode has one clean template image T (values in [0, 1]): a shape drawn anti-aliased on a
black background, centred in one cell of a 2x2 grid.  Item i is drawn from (seed, i) alone:

    mode ~ uniform over the M modes,   s ~ U(0.7, 1.0),   image = 2 * s * T[mode] - 1   (in [-1, 1])

Because every real image is an exact multiple of a known template, a generated image can be
judged without a pretrained network (``ShapesOracle``): fit each template by least squares,
take the template with the smallest relative residual as the image's mode, and call the image
*clean* when that residual is small and the fitted intensity is plausible.  From the modes of
the clean samples we get mode coverage and the KL divergence from the uniform mode
distribution, exactly.

Why these choices:

* Shapes ring / triangle / plus / cross (the plus turned by 45 degrees): outlines rather than
  filled shapes, because filled discs, squares and diamonds fit each other too well (a disc and a
  square are only 0.2-0.3 apart).  Two shapes of these four are >= 0.58 apart at 16x16 and 32x32.
* Colours: the six non-black corners of the RGB cube that are not white, plus white.  A shape in
  the wrong colour is simply another mode.  Over all pairs of different modes whose fitted
  intensity is in the clean band, one template fitted by another leaves a relative residual of
  at least 0.47 (yellow, magenta or cyan fitted by white), at every resolution.
* Positions: the centres of a 2x2 grid; the shape spans 0.4 of the image side and a cell is 0.5,
  so shapes never overlap and are large enough (6 pixels at 16x16, 13 at 32x32) for a small
  generator to learn within minutes on a CPU.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch.utils.data import Dataset

from sngan.run.errors import UserError

SHAPES = ("ring", "triangle", "plus", "cross")
COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "magenta": (1.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
    "white": (1.0, 1.0, 1.0),
}
GRID = 2  # positions: the centres of a GRID x GRID grid of cells
NUM_MODES = len(SHAPES) * len(COLOURS) * GRID * GRID  # 112

SHAPE_HALF_SIZE = 0.2  # half the shape's extent, as a fraction of the image side
SUPERSAMPLE = 4  # anti-aliasing: draw at 4x resolution, then average 4x4 blocks
SCALE_RANGE = (0.7, 1.0)  # intensity s of real items, drawn uniformly
MIN_RESOLUTION = 16

# Oracle calibration (see ShapesOracle).  Real items have residual 0 (up to ~1e-3 float32 error);
# two different modes are >= 0.47 apart (see above), and an image is assigned to its nearest
# template.  The failure cases of tests/test_data.py (noise of std 0.3, a shape shifted by half a
# cell, two shapes in one image, uniform noise) miss the threshold by a margin.  Faint images
# have a small residual relative to the template (a blank image has r = 0) and are rejected by
# the intensity band instead (a blank has s* = 0, a heavily blurred shape s* < 0.58).
RESIDUAL_THRESHOLD = 0.3
# A clean image's fitted intensity must be near the real range [0.7, 1.0]: a faint ghost of a
# shape (s = 0.3) is not a sample of the data distribution, however clean its outline.
SCALE_BAND = (0.6, 1.1)


def mode_parts(mode: int) -> tuple[str, str, tuple[int, int]]:
    """(shape, colour, (row, col)) of a mode index; mode = (shape * colours + colour) * GRID**2 + row * GRID + col."""
    if not 0 <= mode < NUM_MODES:
        raise ValueError(f"mode must be in [0, {NUM_MODES}), got {mode}")
    shape_colour, position = divmod(mode, GRID * GRID)
    shape, colour = divmod(shape_colour, len(COLOURS))
    return SHAPES[shape], list(COLOURS)[colour], divmod(position, GRID)


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of `shape` at coordinates (u, v) measured from its centre in half-sizes (v points down)."""
    if shape == "ring":
        rr = u * u + v * v
        return (rr <= 1.0) & (rr >= 0.25)  # outer radius 1, hole radius 1/2
    if shape == "triangle":
        return (np.abs(v) <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)  # apex on top, base as wide as tall
    if shape == "cross":  # the plus turned by 45 degrees, arms as long as the shape is wide
        d1, d2 = (u - v) / math.sqrt(2.0), (u + v) / math.sqrt(2.0)
        arm = 1.0 / 3.0
        return ((np.abs(d1) <= arm) & (np.abs(d2) <= 1.0)) | ((np.abs(d2) <= arm) & (np.abs(d1) <= 1.0))
    if shape == "plus":
        arm = 1.0 / 3.0  # arms one third of the size wide
        return ((np.abs(u) <= arm) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= arm) & (np.abs(u) <= 1.0))
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def draw(resolution: int, shape: str, colour, center: tuple[float, float], half_size: float = SHAPE_HALF_SIZE) -> torch.Tensor:
    """One anti-aliased shape on black: float32 (3, R, R) in [0, 1].

    `center` = (x, y) and `half_size` are fractions of the image side; `colour` is a name in
    COLOURS or an RGB triple.  Pixel coverage is estimated on a SUPERSAMPLE x SUPERSAMPLE grid
    of sub-pixel centres.
    """
    rgb = np.asarray(COLOURS[colour] if isinstance(colour, str) else colour, dtype=np.float64)
    n = resolution * SUPERSAMPLE
    c = (np.arange(n) + 0.5) / n
    x, y = np.meshgrid(c, c, indexing="xy")  # x grows along columns, y along rows (downwards)
    mask = _inside(shape, (x - center[0]) / half_size, (y - center[1]) / half_size)
    coverage = mask.reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE).mean(axis=(1, 3))
    return torch.from_numpy(rgb[:, None, None] * coverage[None]).float()


def cell_center(row: int, col: int) -> tuple[float, float]:
    """(x, y) centre of grid cell (row, col), as fractions of the image side."""
    return (col + 0.5) / GRID, (row + 0.5) / GRID


@functools.lru_cache(maxsize=8)
def templates(resolution: int) -> torch.Tensor:
    """The M clean templates, float32 (M, 3, R, R) in [0, 1], in mode order.  Cached; do not modify."""
    if resolution < MIN_RESOLUTION:
        raise UserError(f"dataset.resolution={resolution} is too small for the synthetic shapes; use {MIN_RESOLUTION} or more")
    out = torch.empty(NUM_MODES, 3, resolution, resolution)
    for mode in range(NUM_MODES):
        shape, colour, (row, col) = mode_parts(mode)
        out[mode] = draw(resolution, shape, colour, cell_center(row, col))
    return out


class ShapesOracle:
    """Exact judge of images of the synthetic data set at one resolution.

    For an image x (mapped to [0, 1]) and each template T: s* = <x, T> / <T, T> is the best
    intensity and r = ||x - s* T|| / ||T|| the relative residual.  The image's mode is the
    template with the smallest r; it is *clean* when r < RESIDUAL_THRESHOLD and s* lies in
    SCALE_BAND.  All templates are one matrix, so a batch is one matmul.
    """

    def __init__(self, resolution: int):
        self.resolution = int(resolution)
        self.num_modes = NUM_MODES
        self.templates = templates(self.resolution).reshape(NUM_MODES, -1)  # (M, D)
        self.template_sq = (self.templates * self.templates).sum(dim=1)  # (M,) = ||T||^2

    def fit(self, images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mode LongTensor[N], residual FloatTensor[N], scale FloatTensor[N]) of images (N, 3, R, R) in [-1, 1]."""
        r = self.resolution
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, r, r):
            raise ValueError(f"expected images of shape (N, 3, {r}, {r}), got {tuple(images.shape)}")
        images = images.detach()
        tpl = self.templates.to(images.device)
        tsq = self.template_sq.to(images.device)
        modes, residuals, scales = [], [], []
        for start in range(0, images.shape[0], chunk):
            x = (images[start : start + chunk].reshape(-1, tpl.shape[1]).float() + 1.0) / 2.0
            dots = x @ tpl.T  # (n, M)
            # ||x - s*T||^2 = ||x||^2 - <x,T>^2 / ||T||^2 ; divide by ||T||^2 to make it relative.
            rel_sq = ((x * x).sum(dim=1, keepdim=True) - dots * dots / tsq) / tsq
            best_sq, mode = rel_sq.min(dim=1)
            modes.append(mode)
            residuals.append(best_sq.clamp_min(0.0).sqrt())  # clamp: float cancellation can dip below 0
            scales.append(dots.gather(1, mode[:, None])[:, 0] / tsq[mode])
        if not modes:
            empty = images.new_zeros(0, dtype=torch.float32)
            return images.new_zeros(0, dtype=torch.long), empty, empty
        return torch.cat(modes), torch.cat(residuals), torch.cat(scales)

    def classify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mode LongTensor[N], clean BoolTensor[N]) of images (N, 3, R, R) in [-1, 1]."""
        mode, residual, scale = self.fit(images)
        clean = (residual < RESIDUAL_THRESHOLD) & (scale >= SCALE_BAND[0]) & (scale <= SCALE_BAND[1])
        return mode, clean

    def metrics_from(self, mode: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
        """Metrics from classify()'s output (concatenate several batches' outputs first if needed).

        clean_rate: fraction of clean images (0 for no images).  modes_covered: distinct modes among
        clean images; mode_coverage = modes_covered / num_modes.  kl_uniform: KL(p || uniform) in
        nats, p = mode histogram of the clean images; 0 is perfectly uniform, log(M) is a single
        mode.  With no clean image at all it is defined as log(M), the worst value.
        """
        mode, clean = mode.cpu(), clean.cpu()
        n = mode.numel()
        counts = torch.bincount(mode[clean], minlength=self.num_modes).double()
        n_clean = counts.sum().item()
        covered = int((counts > 0).sum().item())
        if n_clean > 0:
            p = counts[counts > 0] / n_clean
            kl = float((p * torch.log(p * self.num_modes)).sum().item())
        else:
            kl = math.log(self.num_modes)
        return {
            "clean_rate": n_clean / n if n else 0.0,
            "modes_covered": float(covered),
            "mode_coverage": covered / self.num_modes,
            "kl_uniform": max(kl, 0.0),
            "num_modes": float(self.num_modes),
        }

    def oracle_metrics(self, images: torch.Tensor) -> dict[str, float]:
        """clean_rate, modes_covered, mode_coverage, kl_uniform, num_modes of images (N, 3, R, R) in [-1, 1]."""
        return self.metrics_from(*self.classify(images))


class SyntheticShapes(Dataset):
    """`size` items of the shapes data set; item i depends only on (seed, i).

    ``__getitem__`` returns float32 (3, R, R) in [-1, 1].  ``mode_of(i)`` is item i's true mode,
    ``oracle`` a ShapesOracle for this resolution, ``num_modes`` = M.
    """

    num_modes = NUM_MODES

    def __init__(self, resolution: int = 32, size: int = 50_000, seed: int = 0):
        if int(resolution) < MIN_RESOLUTION:
            raise UserError(f"dataset.resolution={resolution} is too small for the synthetic shapes; use {MIN_RESOLUTION} or more")
        if int(size) < 1:
            raise UserError(f"dataset.size={size} must be a positive number of items")
        if int(seed) < 0:
            raise UserError(f"dataset.seed={seed} must be a non-negative integer")
        self.resolution, self.size, self.seed = int(resolution), int(size), int(seed)

    def __len__(self) -> int:
        return self.size

    def params(self, index: int) -> tuple[int, float]:
        """(mode, intensity s) of item `index`, from a generator seeded by (seed, index) alone."""
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        rng = np.random.default_rng([self.seed, index])
        return int(rng.integers(NUM_MODES)), float(rng.uniform(*SCALE_RANGE))

    def mode_of(self, index: int) -> int:
        return self.params(index)[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        mode, s = self.params(int(index))
        return 2.0 * s * templates(self.resolution)[mode] - 1.0

    @property
    def oracle(self) -> ShapesOracle:
        return ShapesOracle(self.resolution)  # cheap: the templates are cached per resolution
