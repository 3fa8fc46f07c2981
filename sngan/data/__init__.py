"""Training data: ``build_dataset(cfg)`` from the ``dataset`` config node.

Every data set returns, per index, one float32 image tensor (3, R, R) in [-1, 1] (no label); all are
picklable (DataLoader workers) and deterministic per index.

* ``synthetic``: coloured shapes with an exact oracle for mode coverage (sngan.data.synthetic);
  keys resolution, size, seed.  ``build_dataset(...).oracle`` is its ShapesOracle.
* ``cifar10``: the CIFAR-10 training set via torchvision; keys root, resolution (must be 32), download.
* ``stl10``: the STL-10 unlabeled split (100k images) from its binary file, resized; keys root,
  resolution (48, at most 96), download.
* ``celeba``: aligned CelebA, centre crop then resize; keys root, resolution (usually 64), crop (140).
* ``folder``: every image under root, resized and centre-cropped; keys root, resolution.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from torch.utils.data import Dataset

from sngan.data.real import CELEBA_CROP, celeba, cifar10, folder, stl10
from sngan.data.synthetic import NUM_MODES, ShapesOracle, SyntheticShapes
from sngan.run.errors import UserError

DATASETS = ("synthetic", "cifar10", "stl10", "celeba", "folder")
DEFAULT_RESOLUTION = {"celeba": 64, "stl10": 48}  # else 32

__all__ = ["DATASETS", "build_dataset", "check_dataset_size", "NUM_MODES", "ShapesOracle", "SyntheticShapes"]

_MISSING = object()


def _get(cfg, key: str, default=_MISSING):
    """cfg.key for a DictConfig, a dict or any object with attributes."""
    value = cfg.get(key, _MISSING) if isinstance(cfg, Mapping) else getattr(cfg, key, _MISSING)
    if value is None or value is _MISSING:
        if default is _MISSING:
            raise UserError(f"dataset.{key} is not set; add dataset.{key}=... to the config or the command line")
        return default
    return value


def _int(cfg, key: str, default=_MISSING) -> int:
    value = _get(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value))
        except ValueError:
            raise UserError(f"dataset.{key}={value!r} must be an integer") from None
    return value


def _root(cfg) -> str:
    root = str(_get(cfg, "root"))
    if not root.strip():
        raise UserError("dataset.root is empty; set it to the folder that holds the data")
    return os.path.expanduser(root)


def build_dataset(cfg) -> Dataset:
    """The training data set named by cfg.name (one of DATASETS)."""
    name = str(_get(cfg, "name"))
    if name not in DATASETS:
        raise UserError(f"unknown dataset.name={name!r}; choose one of: {', '.join(DATASETS)}")
    resolution = _int(cfg, "resolution", DEFAULT_RESOLUTION.get(name, 32))
    if resolution < 1:
        raise UserError(f"dataset.resolution={resolution} must be a positive number of pixels")
    if name == "synthetic":
        return SyntheticShapes(resolution=resolution, size=_int(cfg, "size", 50_000), seed=_int(cfg, "seed", 0))
    if name in ("cifar10", "stl10"):
        download = _get(cfg, "download", False)
        if not isinstance(download, bool):
            raise UserError(f"dataset.download={download!r} must be true or false")
        return (cifar10 if name == "cifar10" else stl10)(_root(cfg), resolution, download)
    if name == "celeba":
        crop = _int(cfg, "crop", CELEBA_CROP)  # configs older than the key: the crop they were trained with
        if crop < 1:
            raise UserError(f"dataset.crop={crop} must be a positive number of pixels")
        return celeba(_root(cfg), resolution, crop)
    return folder(_root(cfg), resolution)


def check_dataset_size(dataset: Dataset, batch_size: int, root: str | None = None) -> None:
    """A data set holds at least one batch (known once it is read: real data sets are on disk)."""
    if len(dataset) < batch_size:
        where = f" in dataset.root={root}" if root else ""
        raise UserError(f"train.batch_size must be at most the data set's {len(dataset)} images{where}, "
                        f"got {batch_size}; lower it or add images")
