"""Data sets: the synthetic shapes and their oracle, the real loaders on tiny files in the real formats."""

import math
import os
import pickle
import socket
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from datasets_on_disk import (
    celeba_colour,
    folder_colour,
    skip_cifar10_md5,
    stl10_image,
    write_celeba,
    write_cifar10,
    write_folder,
    write_stl10,
)
from sngan.data import DATASETS, build_dataset, real
from sngan.data.synthetic import (
    COLOURS,
    GRID,
    NUM_MODES,
    RESIDUAL_THRESHOLD,
    SHAPES,
    ShapesOracle,
    SyntheticShapes,
    cell_center,
    draw,
    mode_parts,
    templates,
)
from sngan.run.errors import UserError

RESOLUTIONS = (16, 32, 64)


def stack(dataset, indices):
    return torch.stack([dataset[i] for i in indices])


def gaussian_blur(images, sigma):
    k = int(math.ceil(3 * sigma))
    g = torch.exp(-(torch.arange(-k, k + 1).float() ** 2) / (2 * sigma**2))
    g = g / g.sum()
    c = images.shape[1]
    x = F.conv2d(F.pad(images, (k, k, 0, 0)), g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, k, k)), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


# ---------------------------------------------------------------- synthetic


def test_synthetic_has_over_100_distinct_modes():
    assert NUM_MODES == len(SHAPES) * len(COLOURS) * GRID * GRID == 112 >= 100
    assert len({mode_parts(m) for m in range(NUM_MODES)}) == NUM_MODES


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_synthetic_items_are_images_in_range(resolution):
    ds = SyntheticShapes(resolution=resolution, size=100, seed=0)
    x = stack(ds, range(20))
    assert x.dtype == torch.float32 and x.shape == (20, 3, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1
    assert (x == -1).float().mean() > 0.8  # mostly black background


def test_synthetic_is_deterministic_per_seed_and_index():
    a, b = SyntheticShapes(32, 1000, seed=0), SyntheticShapes(32, 1000, seed=0)
    assert torch.equal(a[123], b[123]) and torch.equal(a[123], a[123])
    assert torch.equal(stack(a, [5, 999, 0]), stack(b, [5, 999, 0]))  # order of access does not matter
    c = SyntheticShapes(32, 1000, seed=1)
    assert not torch.equal(stack(a, range(20)), stack(c, range(20)))
    assert [a.mode_of(i) for i in range(50)] != [c.mode_of(i) for i in range(50)]
    with pytest.raises(IndexError):
        a[1000]


def test_synthetic_modes_are_uniform():
    ds = SyntheticShapes(32, 5000, seed=0)
    counts = np.bincount([ds.mode_of(i) for i in range(len(ds))], minlength=NUM_MODES)
    assert (counts > 0).all()
    expected = len(ds) / NUM_MODES
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 180  # 107 degrees of freedom: mean 107, sd 15
    scales = [ds.params(i)[1] for i in range(500)]
    assert 0.7 <= min(scales) < 0.72 and 0.98 < max(scales) <= 1.0


def test_synthetic_is_picklable_and_works_in_dataloader_workers():
    ds = SyntheticShapes(16, 64, seed=3)
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy[7], ds[7])
    loader = torch.utils.data.DataLoader(ds, batch_size=16, num_workers=2)
    batches = torch.cat(list(loader))
    assert torch.equal(batches, stack(ds, range(64)))


@pytest.mark.parametrize("resolution,n", [(16, 600), (32, 2000), (64, 400)])
def test_oracle_classifies_every_real_item_clean_with_its_true_mode(resolution, n):
    ds = SyntheticShapes(resolution, n, seed=0)
    oracle = ds.oracle
    x = stack(ds, range(n))
    mode, residual, scale = oracle.fit(x)
    true = torch.tensor([ds.mode_of(i) for i in range(n)])
    assert torch.equal(mode, true)
    assert residual.max() < 5e-3
    expected_scale = torch.tensor([ds.params(i)[1] for i in range(n)])
    assert torch.allclose(scale, expected_scale, atol=1e-4)
    mode2, clean = oracle.classify(x)
    assert torch.equal(mode2, true) and clean.all()


def test_oracle_metrics_on_real_items():
    ds = SyntheticShapes(32, 3000, seed=0)
    metrics = ds.oracle.oracle_metrics(stack(ds, range(3000)))
    assert set(metrics) == {"clean_rate", "modes_covered", "mode_coverage", "kl_uniform", "num_modes"}
    assert metrics["clean_rate"] == 1.0
    assert metrics["modes_covered"] == NUM_MODES and metrics["mode_coverage"] == 1.0
    assert metrics["num_modes"] == NUM_MODES
    assert 0 <= metrics["kl_uniform"] < 0.05


def test_oracle_metrics_on_a_single_mode_and_on_nothing_clean():
    oracle = ShapesOracle(32)
    t = templates(32)[17]
    one_mode = torch.stack([2 * s * t - 1 for s in torch.linspace(0.7, 1.0, 50)])
    metrics = oracle.oracle_metrics(one_mode)
    assert metrics["clean_rate"] == 1.0 and metrics["modes_covered"] == 1
    assert metrics["mode_coverage"] == pytest.approx(1 / NUM_MODES)
    assert metrics["kl_uniform"] == pytest.approx(math.log(NUM_MODES))
    # Half collapsed onto two modes: KL = log(M / 2).
    two = torch.cat([one_mode, 2 * 0.8 * templates(32)[90].expand(50, -1, -1, -1) - 1])
    assert oracle.oracle_metrics(two)["kl_uniform"] == pytest.approx(math.log(NUM_MODES / 2))

    nothing = oracle.oracle_metrics(-torch.ones(10, 3, 32, 32))
    assert nothing["clean_rate"] == 0 and nothing["modes_covered"] == 0 and nothing["mode_coverage"] == 0
    assert nothing["kl_uniform"] == pytest.approx(math.log(NUM_MODES))  # defined as the worst value
    empty = oracle.oracle_metrics(torch.zeros(0, 3, 32, 32))
    assert empty["clean_rate"] == 0 and empty["kl_uniform"] == pytest.approx(math.log(NUM_MODES))


def test_oracle_rejects_wrong_image_size():
    with pytest.raises(ValueError, match="32, 32"):
        ShapesOracle(32).classify(torch.zeros(2, 3, 16, 16))


@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_wrong_colour_is_another_clean_mode(resolution):
    oracle = ShapesOracle(resolution)
    colours = list(COLOURS)
    modes = list(range(0, NUM_MODES, 5))
    images, expected = [], []
    for m in modes:
        shape, colour, (row, col) = mode_parts(m)
        other = colours[(colours.index(colour) + 1) % len(colours)]
        images.append(2 * 0.9 * draw(resolution, shape, other, cell_center(row, col)) - 1)
        cells = GRID * GRID  # mode = (shape * colours + colour) * cells + cell
        expected.append(m + (cells if other != colours[0] else -(len(colours) - 1) * cells))
    mode, clean = oracle.classify(torch.stack(images))
    assert mode.tolist() == expected and clean.all()
    assert [mode_parts(e)[1] for e in expected] == [colours[(colours.index(mode_parts(m)[1]) + 1) % len(colours)] for m in modes]


def failure_cases(resolution, generator, intensity=0.85):
    """name -> images (N, 3, R, R) in [-1, 1], built from every template, shapes at `intensity`."""
    T = templates(resolution)
    real = 2 * intensity * T - 1
    shifted, paired = [], []
    for m in range(NUM_MODES):
        shape, colour, (row, col) = mode_parts(m)
        x, y = cell_center(row, col)
        dx = 0.5 / GRID if col < GRID - 1 else -0.5 / GRID  # half a cell, staying inside the image
        shifted.append(draw(resolution, shape, colour, (x + dx, y)))
        cells = GRID * GRID
        paired.append(T[m] + T[(m // cells) * cells + (m % cells + 1) % cells])  # same shape and colour in another cell
    blurred = gaussian_blur(T, sigma=resolution / (4 * GRID))  # a quarter of a cell
    noise = 0.3 * torch.randn(real.shape, generator=generator)
    return {
        "blank": -torch.ones(4, 3, resolution, resolution),
        "uniform noise": torch.rand(64, 3, resolution, resolution, generator=generator) * 2 - 1,
        "gaussian noise 0.3": real + noise,
        "gaussian noise 0.3, clamped": (real + noise).clamp(-1, 1),
        "shifted half a cell": 2 * intensity * torch.stack(shifted) - 1,
        "two shapes": 2 * intensity * torch.stack(paired) - 1,
        "two different shapes": 2 * intensity * (T + T.roll(37, dims=0)).clamp(0, 1) - 1,
        "heavily blurred": 2 * blurred - 1,
        "heavily blurred, rescaled to full peak": 2 * blurred / blurred.amax(dim=(1, 2, 3), keepdim=True) - 1,
        "faint": 2 * 0.3 * T - 1,
    }


@pytest.mark.parametrize("intensity", [0.7, 1.0])
@pytest.mark.parametrize("resolution", RESOLUTIONS)
def test_oracle_failure_cases_are_not_clean(resolution, intensity):
    oracle = ShapesOracle(resolution)
    generator = torch.Generator().manual_seed(resolution)
    for name, images in failure_cases(resolution, generator, intensity).items():
        mode, clean = oracle.classify(images)
        assert not clean.any(), f"{name}: {int(clean.sum())} of {len(clean)} called clean"


def test_oracle_threshold_has_margin():
    """Failures miss the residual threshold by a margin even at the faintest real intensity, except the
    faint ones (blank, blurred, faint), whose fitted intensity s* is far below the band instead."""
    for resolution in RESOLUTIONS:
        oracle = ShapesOracle(resolution)
        cases = failure_cases(resolution, torch.Generator().manual_seed(0), intensity=0.7)
        for name, images in cases.items():
            _, residual, scale = oracle.fit(images)
            if name in ("blank", "heavily blurred", "faint"):
                assert scale.max() < 0.58, (resolution, name, scale.max())
            else:
                assert residual.min() > 1.1 * RESIDUAL_THRESHOLD, (resolution, name, residual.min())
            if name == "shifted half a cell":
                assert scale.max() < 0.3  # rejected twice over


# ---------------------------------------------------------------- cifar10


def test_cifar10_fixture_is_in_the_python2_pickle_format(tmp_path):
    write_cifar10(tmp_path, n_per_batch=2)
    folder = tmp_path / "cifar-10-batches-py"
    assert sorted(os.listdir(folder)) == ["batches.meta"] + [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    with open(folder / "data_batch_3", "rb") as f:
        entry = pickle.load(f, encoding="bytes")  # as on the CIFAR web page
    assert set(entry) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (2, 3072)
    with open(folder / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="latin1")["label_names"][0] == "airplane"  # as torchvision reads it


def test_cifar10_reads_pixels_in_the_right_place(tmp_path, monkeypatch):
    expected = write_cifar10(tmp_path, n_per_batch=3)
    skip_cifar10_md5(monkeypatch)
    ds = real.cifar10(str(tmp_path), 32, download=False)
    assert len(ds) == 15
    for i in (0, 4, 14):
        x = ds[i]
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
        want = torch.from_numpy(expected[i]).permute(2, 0, 1).float() / 127.5 - 1
        assert torch.allclose(x, want, atol=1e-6)
    x = ds[4]  # row 3, column 5: red = 8 * row, green = 8 * column, blue = 37 * index
    assert x[:, 3, 5].tolist() == pytest.approx([24 / 127.5 - 1, 40 / 127.5 - 1, 148 / 127.5 - 1], abs=1e-6)
    assert x.min() == -1 and pickle.loads(pickle.dumps(ds))[4].equal(x)


def test_cifar10_md5_check_rejects_files_that_are_not_the_official_ones(tmp_path):
    write_cifar10(tmp_path, n_per_batch=2)
    with pytest.raises(UserError, match=r"dataset.root=.*corrupted"):
        real.cifar10(str(tmp_path), 32, download=False)


def test_cifar10_missing_says_where_to_get_it(tmp_path):
    with pytest.raises(UserError) as info:
        build_dataset(OmegaConf.create({"name": "cifar10", "root": str(tmp_path), "resolution": 32, "download": False}))
    message = str(info.value)
    assert "dataset.root" in message and "cifar-10-batches-py" in message and "cifar-10-python.tar.gz" in message
    assert "\n" not in message


def test_cifar10_needs_resolution_32(tmp_path):
    with pytest.raises(UserError, match="resolution=32"):
        real.cifar10(str(tmp_path), 64)


def _unreachable(monkeypatch, dataset_class, archive: str):
    """Point `dataset_class`'s download at a local socket that accepts and never answers (no real
    network); yield while it listens."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    monkeypatch.setattr(dataset_class, "url", f"http://127.0.0.1:{server.getsockname()[1]}/{archive}")
    monkeypatch.setattr(real, "DOWNLOAD_TIMEOUT_S", 0.5)
    yield
    server.close()


@pytest.fixture
def unreachable_cifar_url(monkeypatch):
    from torchvision.datasets import CIFAR10

    yield from _unreachable(monkeypatch, CIFAR10, "cifar-10-python.tar.gz")


def test_cifar10_failed_download_is_a_user_error_not_a_hang(tmp_path, unreachable_cifar_url):
    import time

    start = time.perf_counter()
    with pytest.raises(UserError, match=r"could not download CIFAR-10 into dataset.root=.*set dataset.download=false"):
        real.cifar10(str(tmp_path), 32, download=True)
    assert time.perf_counter() - start < 10
    assert socket.getdefaulttimeout() is None  # the timeout was scoped to the download


def test_cifar10_download_true_uses_files_already_there(tmp_path, monkeypatch, unreachable_cifar_url):
    write_cifar10(tmp_path, n_per_batch=1)
    skip_cifar10_md5(monkeypatch)
    assert len(real.cifar10(str(tmp_path), 32, download=True)) == 5


# ---------------------------------------------------------------- stl10


def test_stl10_fixture_is_in_the_official_binary_layout(tmp_path):
    write_stl10(tmp_path, n_unlabeled=3)
    folder = tmp_path / "stl10_binary"
    assert sorted(os.listdir(folder)) == ["class_names.txt", "fold_indices.txt", "test_X.bin", "test_y.bin",
                                          "train_X.bin", "train_y.bin", "unlabeled_X.bin"]
    raw = np.fromfile(folder / "unlabeled_X.bin", dtype=np.uint8)
    assert raw.size == 3 * 3 * 96 * 96
    # image 0, red plane, column-major: byte k is the pixel at row k % 96, column k // 96 (red = 2 * row)
    assert raw[:200].tolist() == [2 * (k % 96) for k in range(200)]
    green = raw[96 * 96: 2 * 96 * 96]  # the next plane: green = 2 * column
    assert green[96 * 7 + 5] == 14
    assert np.fromfile(folder / "train_y.bin", dtype=np.uint8).tolist() == [1, 2]  # labels 1..10


def test_stl10_reads_the_same_pixels_as_torchvision(tmp_path, monkeypatch):
    """torchvision's own STL-10 reader (its md5 check switched off) is the reference decoding."""
    from torchvision.datasets import STL10

    write_stl10(tmp_path, n_unlabeled=5)
    monkeypatch.setattr(STL10, "_check_integrity", lambda self: True)
    reference = STL10(str(tmp_path), split="unlabeled").data  # (N, 3, 96, 96)
    ds = real.stl10(str(tmp_path), 96)
    assert len(ds) == 5
    for i in range(5):
        assert np.array_equal(ds.image(i), reference[i].transpose(1, 2, 0))
        assert np.array_equal(ds.image(i), stl10_image(i))
        want = torch.from_numpy(reference[i]).float() / 127.5 - 1
        assert torch.allclose(ds[i], want, atol=1e-6)


def test_stl10_resizes_to_48_and_is_picklable(tmp_path):
    write_stl10(tmp_path, n_unlabeled=4)
    cfg = {"name": "stl10", "root": str(tmp_path), "resolution": 48, "download": False}
    ds = build_dataset(OmegaConf.create(cfg))
    x = ds[3]
    assert x.dtype == torch.float32 and x.shape == (3, 48, 48)
    pixels = (x + 1) * 127.5
    # A 2x antialiased downscale reproduces a linear ramp at the pixel centres: red 2 * (2r + 0.5), away from the edges
    rows = torch.arange(2, 46, dtype=torch.float32)
    assert torch.allclose(pixels[0, 2:46, 24], 4 * rows + 1, atol=0.51)
    assert torch.allclose(pixels[1, 24, 2:46], 4 * rows + 1, atol=0.51)
    assert torch.allclose(pixels[2], torch.full((48, 48), float(3 * 37)), atol=0.51)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._images is None and torch.equal(copy[3], x)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    assert torch.equal(torch.cat(list(loader)), stack(ds, range(4)))


def test_stl10_missing_or_damaged_is_a_one_line_user_error(tmp_path):
    with pytest.raises(UserError) as info:
        real.stl10(str(tmp_path), 48)
    message = str(info.value)
    assert "dataset.root" in message and "unlabeled_X.bin" in message and "stl10_binary.tar.gz" in message
    assert "\n" not in message
    write_stl10(tmp_path, n_unlabeled=2)
    path = tmp_path / "stl10_binary" / "unlabeled_X.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(UserError, match="truncated"):
        real.stl10(str(tmp_path), 48)
    with pytest.raises(UserError, match="dataset.resolution=128"):
        real.stl10(str(tmp_path), 128)


@pytest.fixture
def unreachable_stl10_url(monkeypatch):
    from torchvision.datasets import STL10

    yield from _unreachable(monkeypatch, STL10, "stl10_binary.tar.gz")


def test_stl10_download_uses_files_already_there_and_fails_cleanly_offline(tmp_path, unreachable_stl10_url):
    import time

    start = time.perf_counter()
    with pytest.raises(UserError, match=r"could not download STL-10 into dataset.root=.*set dataset.download=false"):
        real.stl10(str(tmp_path / "empty"), 48, download=True)
    assert time.perf_counter() - start < 10
    write_stl10(tmp_path / "there", n_unlabeled=3)
    assert len(real.stl10(str(tmp_path / "there"), 48, download=True)) == 3  # no network, no md5 check


# ---------------------------------------------------------------- celeba


def test_celeba_crops_the_centre_and_resizes(tmp_path):
    write_celeba(tmp_path, n=3)
    ds = build_dataset(OmegaConf.create({"name": "celeba", "root": str(tmp_path), "resolution": 64}))
    assert len(ds) == 3
    for i in range(3):
        x = ds[i]
        assert x.dtype == torch.float32 and x.shape == (3, 64, 64)
        want = torch.tensor(celeba_colour(i + 1)).float() / 127.5 - 1
        # The black border is cropped away entirely: every pixel is the centre colour (JPEG error aside).
        assert (x - want[:, None, None]).abs().max() < 0.1


def test_celeba_white_centre_black_border_comes_out_all_white(tmp_path):
    folder = tmp_path / "celeba" / "img_align_celeba"  # torchvision's layout is accepted too
    folder.mkdir(parents=True)
    image = np.zeros((218, 178, 3), np.uint8)
    image[39:179, 19:159] = 255
    from PIL import Image

    Image.fromarray(image).save(folder / "000001.jpg", quality=95)
    x = real.celeba(str(tmp_path), 32)[0]
    assert x.shape == (3, 32, 32) and x.min() > 0.9
    # ... and a crop one pixel too large would have caught the black border:
    image[39:179, 19:159] = 0
    image[40:178, 20:158] = 255
    Image.fromarray(image).save(folder / "000001.jpg", quality=95)
    assert real.celeba(str(tmp_path), 32)[0].min() < 0.5


def test_celeba_crop_is_a_key(tmp_path):
    """Mimicry's CelebA preprocessing crops 178 (the full width): the black border then shows."""
    write_celeba(tmp_path, n=1)
    cfg = {"name": "celeba", "root": str(tmp_path), "resolution": 32}
    inner = build_dataset(OmegaConf.create(cfg))[0]  # default crop 140: only the centre colour
    full = build_dataset(OmegaConf.create({**cfg, "crop": 178}))[0]
    assert (inner + 1).min() > 0.05 and full[:, :, 0].max() < -0.9  # a black column at the left edge
    assert torch.allclose(full[:, 16, 16], inner[:, 16, 16], atol=0.1)
    with pytest.raises(UserError, match="dataset.crop"):
        build_dataset(OmegaConf.create({**cfg, "crop": 0}))


def test_celeba_missing_says_where_to_get_it(tmp_path):
    with pytest.raises(UserError) as info:
        real.celeba(str(tmp_path / "nothing"), 64)
    message = str(info.value)
    assert "dataset.root" in message and "img_align_celeba" in message and "img_align_celeba.zip" in message


# ---------------------------------------------------------------- folder


def test_folder_reads_nested_images_in_sorted_order(tmp_path):
    paths = write_folder(tmp_path, n=6)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = build_dataset(types.SimpleNamespace(name="folder", root=str(tmp_path), resolution=16))
    assert ds.files == paths
    for k in range(6):
        x = ds[k]
        assert x.dtype == torch.float32 and x.shape == (3, 16, 16)
        want = torch.tensor(folder_colour(k)).float() / 127.5 - 1
        assert (x - want[:, None, None]).abs().max() < 0.06
    assert pickle.loads(pickle.dumps(ds))[2].equal(ds[2])


def test_folder_resizes_shorter_side_then_crops_centre(tmp_path):
    from PIL import Image

    image = np.zeros((32, 64, 3), np.uint8)  # 64 wide, 32 high: red | green | blue quarters
    image[:, :16] = (255, 0, 0)
    image[:, 16:48] = (0, 255, 0)
    image[:, 48:] = (0, 0, 255)
    Image.fromarray(image).save(tmp_path / "wide.png")
    x = real.folder(str(tmp_path), 16)[0]
    assert x.shape == (3, 16, 16)
    inner = x[:, :, 1:15]  # the outermost columns blend with the neighbours in the antialiased resize
    assert torch.allclose(inner, torch.tensor([-1.0, 1.0, -1.0])[:, None, None].expand_as(inner), atol=1e-6)


def test_folder_missing_or_empty_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="dataset.root"):
        real.folder(str(tmp_path / "nothing"), 32)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError, match="dataset.root"):
        real.folder(str(tmp_path / "empty"), 32)


# ---------------------------------------------------------------- build_dataset


def test_build_dataset_synthetic_from_config():
    cfg = OmegaConf.create({"name": "synthetic", "root": None, "resolution": 16, "size": 77, "seed": 5, "num_workers": 0})
    ds = build_dataset(cfg)
    assert isinstance(ds, SyntheticShapes) and len(ds) == 77 and ds[0].shape == (3, 16, 16)
    assert ds.seed == 5 and ds.oracle.num_modes == ds.num_modes == NUM_MODES
    default = build_dataset(types.SimpleNamespace(name="synthetic", resolution=32))
    assert len(default) == 50_000


def test_build_dataset_unknown_name_lists_the_choices():
    with pytest.raises(UserError) as info:
        build_dataset(OmegaConf.create({"name": "mnist", "root": "/x", "resolution": 32}))
    assert "mnist" in str(info.value) and all(name in str(info.value) for name in DATASETS)


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"name": "synthetic", "resolution": 8}, "dataset.resolution=8"),
        ({"name": "synthetic", "resolution": "big"}, "dataset.resolution"),
        ({"name": "synthetic", "resolution": 32, "size": 0}, "dataset.size"),
        ({"name": "folder", "root": "???", "resolution": 32}, "dataset.root"),
        ({"name": "cifar10", "root": "/x", "resolution": 32, "download": "yes"}, "dataset.download"),
        ({"resolution": 32}, "dataset.name"),
    ],
)
def test_build_dataset_bad_values_are_user_errors(cfg, match):
    with pytest.raises(UserError, match=match):
        build_dataset(OmegaConf.create(cfg))


def test_folder_images_read_as_they_show(tmp_path):
    """16-bit grey is scaled (not clipped to white), transparency lies over black (not the colour
    hidden under it), an EXIF orientation turns the image upright, hidden files are skipped."""
    from PIL import Image

    from sngan.data.real import ImageFiles, _images_in, as_rgb

    grey = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))  # 32896 / 257 = 128
    grey.save(tmp_path / "grey16.png")
    rgba = Image.new("RGBA", (4, 4), (200, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (0, 200, 0, 255))
    rgba.save(tmp_path / "rgba.png")
    wide = Image.new("RGB", (6, 2), (255, 0, 0))
    wide.putpixel((0, 0), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to view
    wide.save(tmp_path / "turned.png", exif=exif)
    (tmp_path / "._grey16.png").write_bytes(b"macOS metadata, not an image")
    (tmp_path / ".thumbs").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / ".thumbs" / "t.png")

    assert [os.path.basename(p) for p in _images_in(str(tmp_path), recursive=True)] == [
        "grey16.png", "rgba.png", "turned.png"]
    with Image.open(tmp_path / "grey16.png") as image:
        assert np.asarray(as_rgb(image)).tolist() == [[[128] * 3] * 4] * 4
    with Image.open(tmp_path / "rgba.png") as image:
        pixels = np.asarray(as_rgb(image))
    assert pixels[0, 0].tolist() == [0, 200, 0] and pixels[1, 1].tolist() == [0, 0, 0]
    with Image.open(tmp_path / "turned.png") as image:
        upright = as_rgb(image)
    assert upright.size == (2, 6) and upright.getpixel((1, 0)) == (0, 0, 255)  # the corner turned with it
    images = ImageFiles(_images_in(str(tmp_path), recursive=False), lambda im: np.asarray(im))
    assert [images[i].shape for i in range(len(images))] == [(4, 4, 3), (4, 4, 3), (6, 2, 3)]
