"""Tests for sngan.models: shapes, the paper's layer lists and parameter counts, training steps, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sngan.models import MODELS, build_discriminator, build_generator

SMALL = {"cnn": (32, 8), "resnet": (16, 8)}  # (g_ch, d_ch): small widths for fast checks


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weighted_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("resolution", [16, 32, 48, 64])
def test_output_shapes(name: str, resolution: int) -> None:
    g_ch, d_ch = SMALL[name]
    G = build_generator(name, resolution=resolution, z_dim=16, g_ch=g_ch)
    D = build_discriminator(name, resolution=resolution, d_ch=d_ch)
    assert G.z_dim == 16
    x = G(torch.randn(3, 16))
    assert x.shape == (3, 3, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (3,)
    G.eval()
    assert G(torch.randn(1, 16)).shape == (1, 3, resolution, resolution)
    assert D(x[:1]).shape == (1,)


def test_channels_argument() -> None:
    for name in MODELS:
        g_ch, d_ch = SMALL[name]
        G = build_generator(name, resolution=32, z_dim=8, g_ch=g_ch, channels=1)
        D = build_discriminator(name, resolution=32, d_ch=d_ch, channels=1)
        assert D(G(torch.randn(2, 8))).shape == (2,)


def test_paper_cnn_layers_and_params() -> None:
    D = build_discriminator("cnn", resolution=32, d_ch=64)
    convs = [(n, m) for n, m in D.named_modules() if isinstance(m, nn.Conv2d)]
    assert [n for n, _ in convs] == [f"conv{i}" for i in range(1, 8)]
    assert [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]) for _, m in convs] == [
        (3, 64, 3, 1), (64, 64, 4, 2),
        (64, 128, 3, 1), (128, 128, 4, 2),
        (128, 256, 3, 1), (256, 256, 4, 2),
        (256, 512, 3, 1),
    ]  # fmt: skip
    assert isinstance(D.fc, nn.Linear) and (D.fc.in_features, D.fc.out_features) == (4 * 4 * 512, 1)
    assert list(weighted_layers(D)) == [f"conv{i}" for i in range(1, 8)] + ["fc"]
    d_params = (
        (3 * 64 * 9 + 64) + (64 * 64 * 16 + 64)
        + (64 * 128 * 9 + 128) + (128 * 128 * 16 + 128)
        + (128 * 256 * 9 + 256) + (256 * 256 * 16 + 256)
        + (256 * 512 * 9 + 512)
        + (8192 + 1)
    )  # fmt: skip
    assert n_params(D) == d_params == 2_935_873

    G = build_generator("cnn", resolution=32, z_dim=128, g_ch=512)
    g_params = (
        (128 * 8192 + 8192) + 2 * 8192  # dense 4x4x512 + BN
        + (512 * 256 * 16 + 256) + 2 * 256  # deconv + BN
        + (256 * 128 * 16 + 128) + 2 * 128
        + (128 * 64 * 16 + 64) + 2 * 64
        + (64 * 3 * 9 + 3)  # 3x3 conv to RGB
    )  # fmt: skip
    assert n_params(G) == g_params == 3_828_739
    assert [m.out_channels for m in G.modules() if isinstance(m, nn.ConvTranspose2d)] == [256, 128, 64]


def test_paper_resnet_layers_and_params() -> None:
    D = build_discriminator("resnet", resolution=32, d_ch=128)
    assert len(D.blocks) == 4
    assert all(b.conv2.out_channels == 128 for b in D.blocks)
    assert (D.fc.in_features, D.fc.out_features) == (128, 1)
    assert list(weighted_layers(D)) == [
        "blocks.0.conv1", "blocks.0.conv2", "blocks.0.shortcut",
        "blocks.1.conv1", "blocks.1.conv2", "blocks.1.shortcut",
        "blocks.2.conv1", "blocks.2.conv2",
        "blocks.3.conv1", "blocks.3.conv2",
        "fc",
    ]  # fmt: skip
    conv3 = 128 * 128 * 9 + 128
    d_params = (
        (3 * 128 * 9 + 128) + conv3 + (3 * 128 + 128)  # optimized block
        + 2 * conv3 + (128 * 128 + 128)  # down block with 1x1 shortcut
        + 2 * conv3 + 2 * conv3  # two plain blocks, identity shortcut
        + (128 + 1)
    )  # fmt: skip
    assert n_params(D) == d_params == 1_053_825

    G = build_generator("resnet", resolution=32, z_dim=128, g_ch=256)
    block = 2 * 256 + (256 * 256 * 9 + 256) + 2 * 256 + (256 * 256 * 9 + 256) + (256 * 256 + 256)
    g_params = (128 * 4096 + 4096) + 3 * block + 2 * 256 + (256 * 3 * 9 + 3)
    assert n_params(G) == g_params == 4_276_739
    assert [b.conv2.out_channels for b in G.blocks] == [256, 256, 256]


def test_resnet_64_layout() -> None:
    G = build_generator("resnet", resolution=64, g_ch=512)
    assert [b.conv2.out_channels for b in G.blocks] == [256, 128, 64, 32]
    D = build_discriminator("resnet", resolution=64, d_ch=64)
    assert [b.conv2.out_channels for b in D.blocks] == [64, 128, 256, 512, 512]
    assert D.fc.in_features == 512
    x = torch.zeros(1, 512, 4, 4)
    assert D.blocks[-1](x).shape == (1, 512, 4, 4)  # the last (plain) block works on the 4x4 map


def hinge_d(D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - D(real)).mean() + F.relu(1 + D(fake)).mean()


@pytest.mark.parametrize("name", MODELS)
def test_hinge_steps_change_parameters(name: str) -> None:
    g_ch, d_ch = SMALL[name]
    G = build_generator(name, resolution=16, z_dim=8, g_ch=g_ch)
    D = build_discriminator(name, resolution=16, d_ch=d_ch)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.0, 0.9))
    real = torch.rand(4, 3, 16, 16) * 2 - 1

    d_before = {n: m.weight.detach().clone() for n, m in weighted_layers(D).items()}
    opt_d.zero_grad()
    hinge_d(D, real, G(torch.randn(4, 8)).detach()).backward()
    for layer_name, layer in weighted_layers(D).items():
        grad = layer.weight.grad
        assert grad is not None and torch.isfinite(grad).all(), layer_name
        assert grad.abs().sum() > 0, layer_name
    opt_d.step()
    # Weights only: at init the hinge loss's gradient wrt fc.bias is typically exactly -1 + 1 = 0.
    assert all(not torch.equal(w, weighted_layers(D)[n].weight) for n, w in d_before.items())

    g_before = [p.detach().clone() for p in G.parameters()]
    opt_g.zero_grad()
    (-D(G(torch.randn(4, 8))).mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.parameters())
    opt_g.step()
    assert all(not torch.equal(a, b) for a, b in zip(g_before, G.parameters()))


@pytest.mark.parametrize("name", MODELS)
def test_two_forwards_one_backward(name: str) -> None:
    """D(real) and D(fake), one backward of the summed loss, equals the sum of separate backwards."""
    g_ch, d_ch = SMALL[name]
    G = build_generator(name, resolution=16, z_dim=8, g_ch=g_ch)
    D = build_discriminator(name, resolution=16, d_ch=d_ch)
    real, fake = torch.rand(2, 3, 16, 16), G(torch.randn(2, 8))
    hinge_d(D, real, fake).backward()  # also backpropagates into G through fake
    summed = [p.grad.clone() for p in D.parameters()]
    D.zero_grad()
    F.relu(1 - D(real)).mean().backward()
    F.relu(1 + D(fake.detach())).mean().backward()
    for a, b in zip(summed, D.parameters()):
        torch.testing.assert_close(a, b.grad)


@pytest.mark.parametrize("name", MODELS)
def test_d_layer_outputs_not_modified_in_place(name: str) -> None:
    """Forward hooks that keep a layer's output (per-layer diagnostics) must see it unchanged afterwards."""
    D = build_discriminator(name, resolution=16, d_ch=SMALL[name][1])
    kept: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for layer_name, layer in weighted_layers(D).items():
        layer.register_forward_hook(lambda m, i, o, n=layer_name: kept.__setitem__(n, (o, o.detach().clone())))
    D(torch.randn(2, 3, 16, 16))
    assert kept.keys() == weighted_layers(D).keys()
    for layer_name, (out, copy) in kept.items():
        assert torch.equal(out, copy), layer_name


def test_init() -> None:
    D = build_discriminator("resnet", resolution=32, d_ch=8)
    for layer in weighted_layers(D).values():
        assert torch.count_nonzero(layer.bias) == 0
    # gain sqrt(2) on residual convs: xavier bound = gain * sqrt(6 / (fan_in + fan_out))
    bound = 2**0.5 * (6 / (8 * 9 + 8 * 9)) ** 0.5
    w = D.blocks[1].conv1.weight
    assert w.abs().max() <= bound and w.abs().max() > bound / 2**0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "dcgan"}, "choose one of: cnn, resnet"),
        ({"resolution": 40}, "allowed: 16, 32, 48, 64, 128"),
        ({"resolution": 8}, "allowed: 16, 32, 48, 64, 128"),
        ({"g_ch": 0}, "g_ch must be a positive integer"),
        ({"z_dim": 0}, "z_dim must be a positive integer"),
        ({"channels": 2.5}, "channels must be a positive integer"),
    ],
)
def test_bad_generator_arguments(kwargs: dict, match: str) -> None:
    args = {"name": "cnn", "resolution": 32, "g_ch": 64} | kwargs
    with pytest.raises(ValueError, match=match):
        build_generator(args.pop("name"), **args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "ResNet"}, "choose one of: cnn, resnet"),
        ({"resolution": 256}, "allowed: 16, 32, 48, 64, 128"),
        ({"d_ch": -4}, "d_ch must be a positive integer"),
        ({"channels": 0}, "channels must be a positive integer"),
    ],
)
def test_bad_discriminator_arguments(kwargs: dict, match: str) -> None:
    args = {"name": "resnet", "resolution": 32, "d_ch": 8} | kwargs
    with pytest.raises(ValueError, match=match):
        build_discriminator(args.pop("name"), **args)


@pytest.mark.parametrize("name", MODELS)
def test_generator_width_too_small_to_halve(name: str) -> None:
    with pytest.raises(ValueError, match="g_ch must be >= 16"):
        build_generator(name, resolution=64, g_ch=8)
