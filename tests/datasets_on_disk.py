"""Tiny data sets written in the real on-disk formats, for tests (import with ``from datasets_on_disk import ...``).

* write_cifar10: ``cifar-10-batches-py/`` with data_batch_1..5, test_batch, batches.meta as the
  Python 2 pickles (protocol 2) of the official cifar-10-python.tar.gz: dict keys and strings are
  Python 2 ``str``, so they load as ``str`` with ``encoding="latin1"`` (what torchvision does) and
  as ``bytes`` (b"data", ...) with ``encoding="bytes"`` (what the CIFAR web page shows).
  torchvision's CIFAR10 checks each file's md5 against the official one, which a tiny file cannot
  pass: call ``skip_cifar10_md5(monkeypatch)`` before constructing it.
* write_stl10: ``stl10_binary/`` as in stl10_binary.tar.gz: unlabeled_X.bin, train_X.bin, train_y.bin,
  test_X.bin, test_y.bin, class_names.txt, fold_indices.txt. Images are 3 x 96 x 96 uint8, one colour
  plane after another, each plane column-major (the format the STL-10 page describes for Matlab/Fortran
  order); labels are uint8 1..10. Smaller files than the real ones, so torchvision's md5 check fails.
* write_celeba: ``img_align_celeba/000001.jpg, ...`` as 178x218 JPEGs, the aligned CelebA size
  (the real archive holds 202,599 of them, numbered from 000001).
* write_folder: PNG and JPEG images of mixed sizes and modes in nested folders.
* register_test_features(): a small stand-in for Inception (whose weights cannot be downloaded here),
  registered with torch-fidelity as ``sngan-test-features``.

Pixel content is known, so tests can check that values arrive in the right place.
"""

from __future__ import annotations

import io
import os
import pickle
import struct

import numpy as np
from PIL import Image

CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that writes bytes as Python 2 ``str`` and numpy._core as numpy.core, like
    the pickles in cifar-10-python.tar.gz (written by Python 2 cPickle)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core"):  # numpy 2 name; the files (and numpy 1) say numpy.core
            module = "numpy.core" + module[len("numpy._core") :]
            self.write(pickle.GLOBAL + module.encode() + b"\n" + (name or obj.__qualname__).encode() + b"\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _py2_pickle(obj, path: str) -> None:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def cifar10_image(index: int) -> np.ndarray:
    """The uint8 (32, 32, 3) HWC image number `index` (over all batches, in file order) of write_cifar10.

    Red encodes the row, green the column, blue the image index, so any transposition, channel
    swap or reordering shows up.
    """
    return _coded_image(index, size=32, step=8)


def _coded_image(index: int, size: int, step: int) -> np.ndarray:
    """uint8 (size, size, 3) HWC: red = step * row, green = step * column, blue = 37 * index (mod 256)."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[..., 0] = rows * step
    image[..., 1] = cols * step
    image[..., 2] = (index * 37) % 256
    return image


def write_cifar10(root, n_per_batch: int = 4) -> np.ndarray:
    """Write root/cifar-10-batches-py like the official archive; return the training images (N, 32, 32, 3) uint8.

    Training images are numbered 0..5*n_per_batch-1 through data_batch_1..5; the test batch
    continues the numbering.  Each file: dict with b"batch_label", b"labels" (list of int),
    b"data" (uint8 (n, 3072): the red plane row-major, then green, then blue) and b"filenames".
    """
    folder = os.path.join(str(root), "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    batches = [(f"data_batch_{b}", f"training batch {b} of 5") for b in range(1, 6)]
    batches.append(("test_batch", "testing batch 1 of 1"))
    train = []
    index = 0
    for file_name, batch_label in batches:
        images = np.stack([cifar10_image(index + k) for k in range(n_per_batch)])
        data = images.transpose(0, 3, 1, 2).reshape(n_per_batch, 3072)  # CHW planes, row-major
        labels = [(index + k) % 10 for k in range(n_per_batch)]
        _py2_pickle(
            {
                b"batch_label": batch_label.encode(),
                b"labels": labels,
                b"data": np.ascontiguousarray(data),
                b"filenames": [f"{CIFAR10_LABEL_NAMES[lab]}_s_{index + k:06d}.png".encode() for k, lab in enumerate(labels)],
            },
            os.path.join(folder, file_name),
        )
        if file_name.startswith("data_batch"):
            train.append(images)
        index += n_per_batch
    _py2_pickle(
        {b"num_cases_per_batch": n_per_batch, b"label_names": [n.encode() for n in CIFAR10_LABEL_NAMES], b"num_vis": 3072},
        os.path.join(folder, "batches.meta"),
    )
    return np.concatenate(train)


def skip_cifar10_md5(monkeypatch) -> None:
    """Let torchvision's CIFAR10 accept write_cifar10's files: its md5 checks (every batch file and
    batches.meta, via torchvision.datasets.cifar.check_integrity) become existence checks."""
    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


STL10_CLASS_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def stl10_image(index: int) -> np.ndarray:
    """The uint8 (96, 96, 3) HWC image number `index` of a write_stl10 file: red = 2 * row,
    green = 2 * column, blue = 37 * index (mod 256), so a transposition or channel swap shows up."""
    return _coded_image(index, size=96, step=2)


def _write_stl10_images(path: str, first: int, n: int) -> None:
    images = np.stack([stl10_image(first + k) for k in range(n)])  # (n, row, col, channel)
    # (n, channel, column, row) in C order = each channel plane column-major
    images.transpose(0, 3, 2, 1).astype(np.uint8).tofile(path)


def write_stl10(root, n_unlabeled: int = 8, n_train: int = 2, n_test: int = 2) -> np.ndarray:
    """Write root/stl10_binary like the official archive; return the unlabeled images (N, 96, 96, 3) uint8
    (image k of unlabeled_X.bin is stl10_image(k); train and test continue the numbering)."""
    folder = os.path.join(str(root), "stl10_binary")
    os.makedirs(folder, exist_ok=True)
    _write_stl10_images(os.path.join(folder, "unlabeled_X.bin"), 0, n_unlabeled)
    _write_stl10_images(os.path.join(folder, "train_X.bin"), n_unlabeled, n_train)
    _write_stl10_images(os.path.join(folder, "test_X.bin"), n_unlabeled + n_train, n_test)
    for name, n in (("train_y.bin", n_train), ("test_y.bin", n_test)):
        (np.arange(n) % 10 + 1).astype(np.uint8).tofile(os.path.join(folder, name))
    with open(os.path.join(folder, "class_names.txt"), "w") as f:
        f.write("\n".join(STL10_CLASS_NAMES) + "\n")
    with open(os.path.join(folder, "fold_indices.txt"), "w") as f:  # 10 folds of training indices
        f.writelines(" ".join(str(i) for i in range(n_train)) + " \n" for _ in range(10))
    return np.stack([stl10_image(k) for k in range(n_unlabeled)])


def celeba_colour(index: int) -> tuple[int, int, int]:
    """The centre colour of write_celeba's image number `index` (1-based, like the file names)."""
    return (40 * index) % 256, 255 - (30 * index) % 256, (90 + 50 * index) % 256


def write_celeba(root, n: int = 3, border=(0, 0, 0)) -> list[str]:
    """Write root/img_align_celeba/000001.jpg.. : 178x218 (w x h) JPEGs whose centre 140x140 is
    celeba_colour(i) and whose border is `border`; return the paths."""
    folder = os.path.join(str(root), "img_align_celeba")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(1, n + 1):
        image = np.empty((218, 178, 3), dtype=np.uint8)
        image[:] = border
        image[39:179, 19:159] = celeba_colour(i)  # torchvision's CenterCrop(140) box
        path = os.path.join(folder, f"{i:06d}.jpg")
        # 4:4:4 chroma: with the default 4:2:0 subsampling the colour bleeds ~2 pixels into the
        # black border and back, which would blur the crop edge the tests look at.
        Image.fromarray(image).save(path, quality=95, subsampling=0)
        paths.append(path)
    return paths


def folder_colour(index: int) -> tuple[int, int, int]:
    """The colour of write_folder's image number `index` (in sorted path order)."""
    return (17 + 60 * index) % 256, (200 - 45 * index) % 256, (100 + 80 * index) % 256


def write_folder(root, n: int = 6) -> list[str]:
    """Write n single-colour images of mixed sizes, formats and modes under root (nested folders);
    return the paths in sorted order (image k has colour folder_colour(k))."""
    sizes = [(40, 30), (64, 64), (17, 50), (100, 80), (33, 33), (48, 20)]
    names = []
    for k in range(n):
        ext = ".png" if k % 3 else ".jpg"
        names.append(os.path.join(str(root), f"group{k // 3}", f"sub{k % 2}", f"img{k:03d}{ext}"))
    names.sort()
    for k, path in enumerate(names):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image = Image.new("RGB", sizes[k % len(sizes)], folder_colour(k))
        if path.endswith(".png") and k % 2:
            image = image.convert("RGBA")  # alpha channel: must still load as RGB
        image.save(path, quality=95) if path.endswith(".jpg") else image.save(path)
    return names


def register_test_features() -> str:
    """Register SmallFeatures with torch-fidelity (once); return its name."""
    import torch_fidelity

    if "sngan-test-features" not in torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor("sngan-test-features", _small_features())
    return "sngan-test-features"


def _small_features():
    import torch
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class SmallFeatures(FeatureExtractorBase):
        """A stand-in for Inception (whose weights cannot be downloaded here): fixed random conv features."""

        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            gen = torch.Generator().manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.head = torch.nn.Linear(16, 10)
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)

        @staticmethod
        def get_provided_features_list():
            return ("16", "logits_unbiased")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits_unbiased", "fid": "16", "kid": "16"}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

        def forward(self, x):
            assert x.dtype == torch.uint8
            feats = torch.relu(self.conv(x.float() / 255)).mean(dim=(2, 3)).double()
            out = {"16": feats, "logits_unbiased": self.head(feats.float()).double()}
            return tuple(out[name] for name in self.features_list)

    return SmallFeatures

