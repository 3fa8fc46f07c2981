"""Sample-quality metrics: the exact oracle on synthetic data, FID / IS / KID through torch-fidelity.

torch-fidelity computes features with the standard Inception-v3 weights (downloaded on first use,
or read from `inception_weights` offline) and caches the real data's statistics under
`cache_root`, so a second evaluation on the same data set only pays for the generated images.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from sngan.errors import UserError

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


def fidelity_metrics(G: nn.Module, real: Dataset, *, n: int, cache_name: str, cache_root: Path,
                     device: torch.device, feature_extractor: str = DEFAULT_FEATURE_EXTRACTOR,
                     weights: str | None = None, seed: int = 0) -> dict[str, float]:
    """FID, IS and KID of `n` samples of G against `real` (statistics of `real` cached by name)."""
    try:
        import torch_fidelity
    except ImportError:
        raise UserError("FID/IS/KID need torch-fidelity: pip install -e '.[metrics]'") from None
    wrapped = torch_fidelity.GenerativeModelModuleWrapper(_Uint8Generator(G).eval(), G.z_dim, "normal", 0)
    try:
        result = torch_fidelity.calculate_metrics(
            input1=wrapped, input1_model_num_samples=n, input2=_Uint8Images(real),
            input2_cache_name=cache_name, cache_root=str(cache_root), cache=True,
            fid=True, isc=True, kid=True, kid_subset_size=min(1000, n, len(real)),
            feature_extractor=feature_extractor, feature_extractor_weights_path=weights,
            cuda=device.type == "cuda", rng_seed=seed, verbose=False)
    except OSError as e:  # the weights could not be downloaded
        raise UserError(f"could not load the {feature_extractor} weights ({e}); offline, pass "
                        "metrics.inception_weights=PATH to a local copy of the torch-fidelity weights") from None
    return {"fid": float(result["frechet_inception_distance"]),
            "isc": float(result["inception_score_mean"]),
            "kid": float(result["kernel_inception_distance_mean"])}
