"""Sample-quality metrics: the exact oracle on synthetic data, FID / IS / KID through torch-fidelity.

torch-fidelity computes features with the standard Inception-v3 weights (downloaded on first use,
or read from `inception_weights` offline) and caches the real data's statistics under
`cache_root`, so a second evaluation on the same data set only pays for the generated images.

Two ways to count samples: the trainer's (`fidelity_metrics`: n generated images against every real
image, FID, IS and KID) and the published protocols (`protocol_metrics` with one of PROTOCOLS: the
sample counts a paper's numbers were measured with, since FID and IS depend on them).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from sngan.run.errors import UserError, describe_os_error, is_write_error, write_error_fix
from sngan.linalg.network import eval_mode

DEFAULT_FEATURE_EXTRACTOR = "inception-v3-compat"


@dataclass(frozen=True)
class Protocol:
    """How many samples a published FID / IS was measured with."""

    name: str
    isc_samples: int        # generated images for IS
    isc_splits: int         # IS is the mean (and std) over this many equal splits of them
    fid_generated: int      # generated images for FID
    fid_real: int           # real images for FID (a fixed random subset; all when the data set is smaller)
    source: str


PROTOCOLS = {
    # Appendix B.1: IS of "randomly generated 5000 examples ... repeated 10 times"; FID "empirically over
    # 10000 and 5000 samples" (real, generated). The authors' code (pfnet-research/sngan_projection,
    # evaluation.py) does exactly this: calc_inception(n_ims=50000, splits=10), calc_FID(n_ims=5000).
    "sngan": Protocol("sngan", isc_samples=50_000, isc_splits=10, fid_generated=5_000, fid_real=10_000,
                      source="Miyato et al. 2018, Appendix B.1; sngan_projection evaluation.py "
                             "(calc_inception n_ims=50000 splits=10, calc_FID n_ims=5000)"),
    # kwotsin/mimicry README, "Metrics": IS "50K samples at 10 splits", FID "50K real/generated samples".
    "mimicry": Protocol("mimicry", isc_samples=50_000, isc_splits=10, fid_generated=50_000, fid_real=50_000,
                        source="kwotsin/mimicry README, Baselines: Metrics (IS 50K samples at 10 splits, "
                               "FID 50K real/generated samples)"),
}
REAL_SUBSET_SEED = 0  # which real images a protocol's FID uses when it takes fewer than the data set holds


class _Uint8Generator(nn.Module):
    """G with outputs in [-1, 1] mapped to the uint8 images torch-fidelity's extractors expect."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.G = G

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return ((self.G(z) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


class _Uint8Images(Dataset):
    """A data set of [-1, 1] float images, as uint8 images."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> torch.Tensor:
        return ((self.base[index] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _torch_fidelity():
    try:
        import torch_fidelity
    except ImportError:
        raise UserError("FID/IS/KID need torch-fidelity: pip install -e '.[metrics]'") from None
    return torch_fidelity


def _weights_error(name: str, error: Exception, weights: str | None = None) -> UserError:
    if weights and not isinstance(error, OSError):  # the file is there but holds no such weights
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:160]
        return UserError(f"metrics.inception_weights={weights} is not a weights file of {name} ({reason}); pass "
                         "a local copy of torch-fidelity's weights file, or leave it unset to download them")
    return UserError(f"could not load the {name} weights ({error}); offline, pass "
                     "metrics.inception_weights=PATH to a local copy of the torch-fidelity weights "
                     "(or train with metrics.during_training=false)")


def real_stats_cache_name(dataset_name: str, root: str, resolution: int, feature_extractor: str,
                          crop: int | None = None, images: int | None = None) -> str:
    """The name the real data's feature statistics are cached under: one per data folder, crop,
    size and number of images (a folder that gains or loses images is another data set)."""
    where = hashlib.sha1(str(Path(root or ".").expanduser().resolve()).encode()).hexdigest()[:8]
    cropped = "" if crop is None else f"-crop{crop}"
    counted = "" if images is None else f"-n{images}"
    return f"sngan-{dataset_name}-{resolution}{cropped}-{feature_extractor}-{where}{counted}"


def _local(weights: str | None) -> str | None:
    return str(Path(weights).expanduser()) if weights else None


def _worker_message(error: UserError) -> str:
    """A UserError raised in a DataLoader worker comes back wrapped in the worker's traceback: its
    own last line is the message."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.split("UserError: ", 1)[-1]


def check_feature_extractor(name: str, weights: str | None) -> None:
    """Fail now, not at the first evaluation, if the extractor or its weights are unavailable."""
    tf = _torch_fidelity()
    registry = tf.registry.FEATURE_EXTRACTORS_REGISTRY
    if name not in registry:
        raise UserError(f"metrics.feature_extractor={name!r} is not a torch-fidelity feature extractor "
                        f"(registered: {', '.join(sorted(registry))})")
    layer = registry[name].get_default_feature_layer_for_metric("fid")
    try:
        with torch.random.fork_rng(devices=[]):  # building it must not draw from the run's RNG
            tf.utils.create_feature_extractor(name, [layer], cuda=False, verbose=False,
                                              feature_extractor_weights_path=_local(weights))
    except OSError as e:
        raise _weights_error(name, e, weights) from None
    except Exception as e:  # a file that unpickles to garbage, or to other weights
        if not weights:
            raise
        raise _weights_error(name, e, weights) from None


def fidelity_metrics(G: nn.Module, real: Dataset, *, n: int, cache_name: str, cache_root: Path,
                     device: torch.device, feature_extractor: str = DEFAULT_FEATURE_EXTRACTOR,
                     weights: str | None = None, seed: int = 0) -> dict[str, float]:
    """FID, IS and KID of `n` samples of G against `real` (statistics of `real` cached by name).

    G's train/eval flags and the caller's RNG streams are as they were afterwards, so that an
    evaluation in the middle of training changes nothing about the run.
    """
    result = _calculate(G, device, seed, feature_extractor, weights,
                        input1_model_num_samples=n, input2=_Uint8Images(real), input2_cache_name=cache_name,
                        cache_root=str(Path(cache_root).expanduser()), cache=True,
                        fid=True, isc=True, kid=True, kid_subset_size=min(1000, n, len(real)),
                        isc_splits=min(10, n))  # fewer samples than splits: empty splits, an IS of NaN
    return {"fid": float(result["frechet_inception_distance"]),
            "isc": float(result["inception_score_mean"]),
            "kid": float(result["kernel_inception_distance_mean"])}


class RealDataMetrics:
    """G -> FID/IS/KID scalars (`metrics/fid`, ...) of n samples against a real data set: the
    trainer's periodic evaluation (its data set's statistics cached under cache_root)."""

    def __init__(self, dataset: Dataset, *, dataset_name: str, root: str, resolution: int, n: int, cache_root: Path,
                 device: torch.device, feature_extractor: str, weights: str | None, seed: int, crop: int | None = None):
        self.dataset, self.n, self.cache_root, self.device, self.seed = dataset, n, cache_root, device, seed
        self.feature_extractor, self.weights = feature_extractor, weights
        self.cache_name = real_stats_cache_name(dataset_name, root, resolution, feature_extractor, crop, len(dataset))

    def __call__(self, G: nn.Module) -> dict[str, float]:
        values = fidelity_metrics(G, self.dataset, n=self.n, cache_name=self.cache_name, cache_root=self.cache_root,
                                  device=self.device, feature_extractor=self.feature_extractor, weights=self.weights,
                                  seed=self.seed)
        return {f"metrics/{k}": v for k, v in values.items()}


def _calculate(G: nn.Module, device: torch.device, seed: int, feature_extractor: str, weights: str | None,
               **kwargs) -> dict:
    """torch_fidelity.calculate_metrics with G's samples (z ~ N(0, I) seeded by `seed`) as input1; G's
    train/eval flags and the caller's RNG streams are as they were afterwards."""
    tf = _torch_fidelity()
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    # torch-fidelity puts G, its extractor and its batches on the current CUDA device: make it G's.
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    try:
        with eval_mode(G), torch.random.fork_rng(devices=devices), on_device:
            # The wrapper switches G to eval mode for good; eval_mode switches it back.
            wrapped = tf.GenerativeModelModuleWrapper(_Uint8Generator(G), G.z_dim, "normal", 0)
            return tf.calculate_metrics(
                input1=wrapped, feature_extractor=feature_extractor, feature_extractor_weights_path=_local(weights),
                cuda=device.type == "cuda", rng_seed=seed, verbose=False,
                # its loader takes min(4, 2 x cores) workers, more than a small machine has: none there
                save_cpu_ram=(os.cpu_count() or 1) < 4, **kwargs)
    except UserError as e:  # an unreadable image, perhaps read in one of its loader's workers
        raise UserError(_worker_message(e)) from None
    except OSError as e:
        if is_write_error(e):  # the real data's statistics go to the cache
            raise UserError(f"cannot write {describe_os_error(e)} (metrics.cache_root caches the real data's "
                            f"statistics): {write_error_fix(e)}, or pass another metrics.cache_root") from None
        raise _weights_error(feature_extractor, e) from None  # the weights could not be downloaded


def real_subset(real: Dataset, n: int) -> Dataset:
    """`n` real images in a fixed random choice (REAL_SUBSET_SEED), or all of them if there are no more."""
    if n >= len(real):
        return real
    chosen = torch.randperm(len(real), generator=torch.Generator().manual_seed(REAL_SUBSET_SEED))[:n]
    return Subset(real, sorted(chosen.tolist()))


def protocol_metrics(G: nn.Module, real: Dataset, protocol: Protocol, *, cache_name: str, cache_root: Path,
                     device: torch.device, feature_extractor: str = DEFAULT_FEATURE_EXTRACTOR,
                     weights: str | None = None, seed: int = 0) -> dict:
    """FID and IS (mean and std over the splits) counted as `protocol` says, and the counts used.

    IS and FID draw their generated images from the same seeded z stream (FID's are the first
    `fid_generated` of IS's); the real statistics are cached per subset size."""
    isc = _calculate(G, device, seed, feature_extractor, weights, input1_model_num_samples=protocol.isc_samples,
                     isc=True, isc_splits=protocol.isc_splits)
    subset = real_subset(real, protocol.fid_real)
    fid = _calculate(G, device, seed, feature_extractor, weights, input1_model_num_samples=protocol.fid_generated,
                     input2=_Uint8Images(subset), input2_cache_name=f"{cache_name}-real{len(subset)}",
                     cache_root=str(Path(cache_root).expanduser()), cache=True, fid=True)
    counts = {**asdict(protocol), "fid_real": len(subset)}
    return {"fid": float(fid["frechet_inception_distance"]), "isc": float(isc["inception_score_mean"]),
            "isc_std": float(isc["inception_score_std"]), "protocol": counts}
