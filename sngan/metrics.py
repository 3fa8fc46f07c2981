"""Sample-quality metrics: the exact oracle on synthetic data, FID / IS / KID through torch-fidelity.

torch-fidelity computes features with the standard Inception-v3 weights (downloaded on first use,
or read from `inception_weights` offline) and caches the real data's statistics under
`cache_root`, so a second evaluation on the same data set only pays for the generated images.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from sngan.errors import UserError
from sngan.monitor import eval_mode

DEFAULT_FEATURE_EXTRACTOR = "inception-v3-compat"


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


def real_stats_cache_name(dataset_name: str, root: str, resolution: int, feature_extractor: str) -> str:
    """The name the real data's feature statistics are cached under: one per data folder and size."""
    where = hashlib.sha1(str(Path(root or ".").expanduser().resolve()).encode()).hexdigest()[:8]
    return f"sngan-{dataset_name}-{resolution}-{feature_extractor}-{where}"


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
                                              feature_extractor_weights_path=weights)
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
    tf = _torch_fidelity()
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    try:
        with eval_mode(G), torch.random.fork_rng(devices=devices):
            # The wrapper switches G to eval mode for good; eval_mode switches it back.
            wrapped = tf.GenerativeModelModuleWrapper(_Uint8Generator(G), G.z_dim, "normal", 0)
            result = tf.calculate_metrics(
                input1=wrapped, input1_model_num_samples=n, input2=_Uint8Images(real),
                input2_cache_name=cache_name, cache_root=str(Path(cache_root).expanduser()), cache=True,
                fid=True, isc=True, kid=True, kid_subset_size=min(1000, n, len(real)),
                feature_extractor=feature_extractor, feature_extractor_weights_path=weights,
                cuda=device.type == "cuda", rng_seed=seed, verbose=False,
                # its loader takes min(4, 2 x cores) workers, more than a small machine has: none there
                save_cpu_ram=(os.cpu_count() or 1) < 4)
    except OSError as e:  # the weights could not be downloaded
        raise _weights_error(feature_extractor, e) from None
    return {"fid": float(result["frechet_inception_distance"]),
            "isc": float(result["inception_score_mean"]),
            "kid": float(result["kernel_inception_distance_mean"])}
