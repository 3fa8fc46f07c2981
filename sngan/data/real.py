"""Real image data sets: ``cifar10``, ``stl10``, ``celeba`` and ``folder``.

Each returns float32 images (3, R, R) in [-1, 1], no labels.  Missing or unreadable data is a
UserError that names ``dataset.root`` and says how to get the data.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tarfile

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from sngan.run.errors import UserError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
STL10_URL = "https://ai.stanford.edu/~acoates/stl10/"
STL10_SIDE = 96  # STL-10 images are 96x96x3, stored as uint8 channel planes, each plane column-major
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Seconds any single network operation of a download may stall before we give up.  urllib (used by
# torchvision) has no timeout by default, so a silently dropped connection would hang forever.
DOWNLOAD_TIMEOUT_S = 60.0
CELEBA_CROP = 140  # the usual CelebA-64 preprocessing: centre 140x140 of the 178x218 aligned image (Mimicry: 178)


def _transforms():
    """torchvision.transforms, imported when a real data set is built: importing torchvision takes
    seconds, which a run on the embedded data set or a command that stops at a user error need not pay."""
    from torchvision import transforms

    return transforms


def to_minus1_1():
    """PIL RGB image -> float32 (3, H, W) in [-1, 1]."""
    T = _transforms()
    return T.Compose([T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """Give every socket opened inside the block a timeout (restored afterwards)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


class _ImagesOnly(Dataset):
    """A torchvision (image, label) data set, returning the image only."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.base[index][0]


def cifar10(root: str, resolution: int = 32, download: bool = False) -> Dataset:
    """The 50,000 CIFAR-10 training images via torchvision.datasets.CIFAR10.

    torchvision checks the md5 of every batch file against the official ones, so only the real,
    complete data set loads (tests monkeypatch that check; see tests/fixtures.py).
    """
    from torchvision.datasets import CIFAR10

    if resolution != 32:
        raise UserError(f"dataset.resolution={resolution} is not possible for cifar10, whose images are 32x32; set dataset.resolution=32")
    folder = os.path.join(root, CIFAR10.base_folder)
    get_it = f"download cifar-10-python.tar.gz from {CIFAR10_URL} and extract it in {root}"
    if download:
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                base = CIFAR10(root, train=True, download=True, transform=to_minus1_1())
        except (OSError, RuntimeError, EOFError, tarfile.TarError) as e:  # URLError and timeouts are OSErrors
            raise UserError(
                f"could not download CIFAR-10 into dataset.root={root} ({_one_line(e)}); "
                f"check the network, or {get_it} and set dataset.download=false"
            ) from None
        return _ImagesOnly(base)
    how = f"{get_it}, or run once online with dataset.download=true"
    if not os.path.isdir(folder):
        raise UserError(f"CIFAR-10 not found in dataset.root={root} (expected {folder}); {how}")
    try:
        base = CIFAR10(root, train=True, download=False, transform=to_minus1_1())
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted" = a file missing or its md5 wrong
        raise UserError(
            f"CIFAR-10 in dataset.root={root} is incomplete or corrupted ({_one_line(e)}); "
            f"delete {folder} and {how}"
        ) from None
    return _ImagesOnly(base)


class ImageFiles(Dataset):
    """Images from a sorted list of files, each through `transform` (which must end in [-1, 1] tensors)."""

    def __init__(self, files: list[str], transform):
        self.files = files
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                image = as_rgb(image)
        except OSError as e:
            raise UserError(f"cannot read image {path} ({_one_line(e)}); remove or replace the file") from None
        return self.transform(image)


def _is_image_name(name: str) -> bool:
    """An image file's name; hidden files (macOS's `._x.jpg` metadata beside x.jpg) are not images."""
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def as_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as the file shows it: turned upright by its EXIF orientation, 16-bit grey scaled to
    8 bits (PIL's convert would clip it at 255: a white image), transparency over black (convert
    would bring back the colours hidden under it)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        grey = np.asarray(image, dtype=np.float64) / 257  # 65535 -> 255
        return Image.fromarray(grey.round().clip(0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        black = Image.new("RGBA", image.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _images_in(folder: str, recursive: bool) -> list[str]:
    """Image files in `folder`, sorted so that index i always means the same file."""
    found = []
    if recursive:
        for directory, subdirs, names in os.walk(folder):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))  # no hidden folders (.thumbnails)
            found += [os.path.join(directory, n) for n in names if _is_image_name(n)]
    else:
        with os.scandir(folder) as entries:
            found = [e.path for e in entries if _is_image_name(e.name) and e.is_file()]
    return sorted(found)


class STL10Binary(Dataset):
    """Images of an STL-10 binary file (``unlabeled_X.bin``, ``train_X.bin``, ...) through `transform`.

    The official format (the dataset's web page, and torchvision's reader): N images of 3 x 96 x 96
    uint8, one colour plane after another, each plane column-major. The file is memory-mapped per
    process (opened lazily, so the data set pickles as a path for DataLoader workers).
    """

    def __init__(self, path: str, transform):
        self.path, self.transform = path, transform
        size = os.path.getsize(path)
        image_bytes = 3 * STL10_SIDE * STL10_SIDE
        if size == 0 or size % image_bytes:
            raise UserError(f"{path} is not an STL-10 binary file ({size} bytes, not a positive multiple of "
                            f"{image_bytes}): it is truncated or damaged; delete it and extract "
                            "stl10_binary.tar.gz again")
        self.n = size // image_bytes
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return self.n

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}

    def image(self, index: int) -> np.ndarray:
        """Image `index` as uint8 HWC (96, 96, 3)."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} images")
        if self._images is None:
            self._images = np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.n, 3, STL10_SIDE, STL10_SIDE))
        # stored as [channel, column, row]: rows first for HWC
        return np.ascontiguousarray(self._images[index].transpose(2, 1, 0))

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(Image.fromarray(self.image(index)))


def stl10(root: str, resolution: int = 48, download: bool = False) -> Dataset:
    """The 100,000 unlabeled STL-10 images (``stl10_binary/unlabeled_X.bin``), resized to `resolution`.

    Read directly from the official binary file, so any copy in that format loads (torchvision's STL10
    would insist on the archive's md5 sums). With `download`, a missing file is fetched by torchvision
    (which checks the md5 of the archive it downloads)."""
    if resolution > STL10_SIDE:
        raise UserError(f"dataset.resolution={resolution} is larger than STL-10's {STL10_SIDE}x{STL10_SIDE} images; "
                        "set dataset.resolution=48 (the paper's) or at most 96")
    path = os.path.join(root, "stl10_binary", "unlabeled_X.bin")
    get_it = f"download stl10_binary.tar.gz from {STL10_URL} and extract it in {root}"
    if not os.path.isfile(path) and download:
        from torchvision.datasets import STL10

        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                STL10(root, split="unlabeled", download=True)
        except (OSError, RuntimeError, EOFError, tarfile.TarError) as e:  # URLError and timeouts are OSErrors
            raise UserError(
                f"could not download STL-10 into dataset.root={root} ({_one_line(e)}); "
                f"check the network, or {get_it} and set dataset.download=false"
            ) from None
    if not os.path.isfile(path):
        raise UserError(f"STL-10 not found in dataset.root={root} (expected {path}); {get_it}, "
                        "or run once online with dataset.download=true")
    # As torchvision.transforms.Resize on the PIL image: Mimicry's STL-10 preprocessing.
    T = _transforms()
    return STL10Binary(path, T.Compose([T.Resize(resolution), to_minus1_1()]))


def celeba(root: str, resolution: int = 64, crop: int = CELEBA_CROP) -> Dataset:
    """Aligned CelebA (img_align_celeba/*.jpg), centre-cropped to `crop` (140) and resized to `resolution`."""
    candidates = [os.path.join(root, "img_align_celeba"), os.path.join(root, "celeba", "img_align_celeba")]
    if os.path.basename(os.path.normpath(root)) == "img_align_celeba":
        candidates.insert(0, root)  # dataset.root pointing at the image folder itself
    for folder in candidates:
        files = _images_in(folder, recursive=False) if os.path.isdir(folder) else []
        if files:
            break
    else:
        raise UserError(
            f"CelebA not found in dataset.root={root} (expected JPEGs in {candidates[-2]} or {candidates[-1]}); "
            f"download img_align_celeba.zip ('Align&Cropped Images') from {CELEBA_URL} and unzip it in {root}, "
            "or run torchvision.datasets.CelebA(root, download=True) once online with gdown installed"
        )
    T = _transforms()
    transform = T.Compose([T.CenterCrop(crop), T.Resize((resolution, resolution)), to_minus1_1()])
    return ImageFiles(files, transform)


def folder(root: str, resolution: int) -> Dataset:
    """Every image under `root` (recursively): shorter side resized to `resolution`, then centre-cropped."""
    if not os.path.isdir(root):
        raise UserError(f"image folder dataset.root={root} does not exist; set dataset.root to a folder of images")
    files = _images_in(root, recursive=True)
    if not files:
        raise UserError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under dataset.root={root}; "
            "set dataset.root to a folder that contains images"
        )
    T = _transforms()
    transform = T.Compose([T.Resize(resolution), T.CenterCrop(resolution), to_minus1_1()])
    return ImageFiles(files, transform)
