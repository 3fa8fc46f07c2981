"""Certified whole-network Lipschitz bounds (sngan.linalg.network, sngan.sigma.network_lipschitz_bounds),
checked against independent references: dense SVDs of the maps' matrices, exact input gradients of
linear networks, and the per-layer product the CNN's bound must equal."""

from __future__ import annotations

import copy
import math
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sngan.models.resnet as resnet_module
from sngan.diagnostics.monitor import layer_input_sizes, sigma_scalars
from sngan.linalg.network import NoCertifiedBound, network_upper_bound
from sngan.models.cnn import CNNDiscriminator
from sngan.models.resnet import ResNetDiscriminator
from sngan.run.errors import UserError
from sngan.sigma import network_lipschitz_bounds, operator_sigma_bounds
from sngan.spectral import apply_spectral_norm, normalized_layers

SHAPE = (3, 16, 16)


def _dense_matrix(fn, shape) -> torch.Tensor:
    """The matrix of a linear map on inputs of `shape` (one row per unit input), in float64."""
    n = math.prod(shape)
    with torch.no_grad():
        return fn(torch.eye(n, dtype=torch.float64).view(n, *shape)).reshape(n, -1)


def _dense_norm(fn, shape) -> float:
    return float(torch.linalg.matrix_norm(_dense_matrix(fn, shape), ord=2))


def _exact_layer_upper(name, layer, size):
    return operator_sigma_bounds(layer, size)[1]


def _unbiased(D: nn.Module) -> nn.Module:
    for m in D.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)  # a bias translates; without it the linear network's map is linear
    return D


@pytest.fixture
def linear_resnet_relu(monkeypatch):
    """The ResNet discriminator's forward with every ReLU made the identity (a LeakyReLU of slope 1)."""
    shim = types.SimpleNamespace(**{k: getattr(F, k) for k in dir(F) if not k.startswith("__")})
    shim.relu = lambda x, inplace=False: F.leaky_relu(x, 1.0)
    monkeypatch.setattr(resnet_module, "F", shim)


def _check_linear_network(D: nn.Module) -> tuple[float, float, float]:
    lower, upper = network_lipschitz_bounds(D, SHAPE)
    D64 = copy.deepcopy(D).double().eval()
    exact = _dense_norm(D64, SHAPE)  # D's single row: the norm of its (constant) input gradient
    assert upper >= exact >= lower
    assert lower == pytest.approx(exact, rel=1e-8)
    return lower, exact, upper


def test_linear_cnn_bounds_bracket_the_exact_norm_of_its_row():
    torch.manual_seed(1)
    D = _unbiased(CNNDiscriminator(16, d_ch=4, leaky_slope=1.0))  # LeakyReLU(1) is the identity
    _check_linear_network(D)


def test_linear_resnet_bounds_bracket_the_exact_norm_of_its_row(linear_resnet_relu):
    torch.manual_seed(2)
    D = _unbiased(ResNetDiscriminator(16, d_ch=4))
    _check_linear_network(D)


def test_linear_network_with_eval_batchnorm():
    torch.manual_seed(3)
    bn = nn.BatchNorm2d(3).eval()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(-2, 2)
    D = nn.Sequential(bn, nn.Conv2d(3, 2, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(2 * 16 * 16, 1, bias=False))
    lower, upper = network_lipschitz_bounds(D, SHAPE)
    D64 = copy.deepcopy(D).double().eval()
    exact = _dense_norm(lambda x: D64(x) - D64(torch.zeros_like(x[:1])), SHAPE)  # the BN shift removed
    assert upper >= exact >= lower and lower == pytest.approx(exact, rel=1e-8)


class _NearlyIdentityBlock(nn.Module):
    def __init__(self, relu: bool):
        super().__init__()
        self.relu = relu
        self.shortcut = nn.Conv2d(2, 2, 1, bias=False)
        self.conv1 = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv1.weight.mul_(1e-4)

    def forward(self, x):
        h = self.conv1(x)
        h = self.conv2(F.relu(h) if self.relu else h)
        return self.shortcut(x) + h


@pytest.mark.parametrize("relu", [False, True])
def test_residual_block_with_a_near_zero_branch(relu):
    torch.manual_seed(4)
    block, shape = _NearlyIdentityBlock(relu), (2, 5, 5)
    lower, upper = network_lipschitz_bounds(block, shape)
    block64 = copy.deepcopy(block).double()
    shortcut = _dense_norm(block64.shortcut, shape)
    layer_product = math.prod(_dense_norm(getattr(block64, n), shape) for n in ("shortcut", "conv1", "conv2"))
    assert layer_product < 1e-3 * shortcut  # the product of the layers' norms says nothing here
    if relu:  # the Jacobian's norm at any point is at most the Lipschitz constant
        exact = max(float(torch.linalg.matrix_norm(torch.autograd.functional.jacobian(
            block64, torch.randn(1, *shape, dtype=torch.float64)).reshape(50, 50), ord=2)) for _ in range(5))
    else:
        exact = _dense_norm(block64, shape)
    assert upper >= exact >= lower
    assert exact == pytest.approx(shortcut, rel=1e-2) and upper == pytest.approx(shortcut, rel=1e-2)


@pytest.mark.parametrize("variant", ["reshaped", "builtin", "naive", "operator"])
def test_paper_cnn_bound_is_the_product_of_the_layer_bounds(variant):
    torch.manual_seed(5)
    D = CNNDiscriminator(32, d_ch=8)  # paper_table layout, LeakyReLU(0.1)
    apply_spectral_norm(D, variant)
    sizes = layer_input_sizes(D, (3, 32, 32), "cpu")
    scalars = sigma_scalars(D, sizes)
    product = math.prod(scalars[f"sigma/operator_upper/{name}"] for name, _ in normalized_layers(D))
    assert scalars["sigma/lipschitz_bound_upper"] == pytest.approx(product, rel=1e-14)
    _, upper = network_lipschitz_bounds(D, (3, 32, 32))
    assert upper == pytest.approx(product, rel=1e-9)  # the same bounds, without the Lanczos warm starts


@pytest.mark.parametrize("variant", ["reshaped", "naive", "operator"])
def test_nothing_in_d_changes(variant):
    torch.manual_seed(6)
    D = ResNetDiscriminator(16, d_ch=4)
    apply_spectral_norm(D, variant)
    layer_input_sizes(D, SHAPE, "cpu")
    D.train()
    state = {k: v.clone() for k, v in D.state_dict().items()}
    hooks = [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in D.modules()]
    rng = torch.get_rng_state()
    lower, upper = network_lipschitz_bounds(D, SHAPE)
    assert 0 < lower <= upper
    assert torch.equal(rng, torch.get_rng_state())
    assert all(m.training for m in D.modules())
    assert hooks == [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in D.modules()]
    assert all(torch.equal(v, D.state_dict()[k]) for k, v in state.items())
    D(torch.zeros(1, *SHAPE))  # D still runs


class _Sinh(nn.Module):
    def forward(self, x):
        return torch.sinh(x)


class _Untraceable(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


def test_an_op_without_a_bound_is_refused_by_name():
    D = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Sequential(nn.ReLU(), _Sinh()), nn.Flatten(), nn.LazyLinear(1))
    D(torch.zeros(1, *SHAPE))
    with pytest.raises(NoCertifiedBound, match=r"no certified bound: sinh at 1\.1"):
        network_lipschitz_bounds(D, SHAPE)
    assert issubclass(NoCertifiedBound, UserError)
    with pytest.raises(NoCertifiedBound, match="no certified bound: GELU at act"):
        network_upper_bound(_WithModule(nn.GELU()), (2,), _exact_layer_upper)
    with pytest.raises(NoCertifiedBound, match=r"_Untraceable at 1 cannot be traced"):
        network_upper_bound(nn.Sequential(nn.Linear(2, 2), _Untraceable()), (2,), _exact_layer_upper)
    with pytest.raises(NoCertifiedBound, match="no certified bound: mul by a tensor or by the input"):
        network_upper_bound(_Lambda(lambda x: x * x), (2,), _exact_layer_upper)


def test_the_monitor_logs_nan_and_warns_for_a_d_it_cannot_bound():
    D = nn.Sequential(nn.Linear(4, 3), _Sinh(), nn.Linear(3, 1))
    with pytest.warns(UserWarning, match="sinh"):
        scalars = sigma_scalars(D, {"0": None, "2": None})
    assert math.isnan(scalars["sigma/lipschitz_bound_upper"])


class _WithModule(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        self.act = act

    def forward(self, x):
        return self.act(x)


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _stated(fn, shape) -> float:
    return network_upper_bound(_Lambda(fn), shape, _exact_layer_upper)


@pytest.mark.parametrize("fn", [lambda x: x.sum(dim=(2, 3)), lambda x: torch.sum(x, dim=(2, 3)),
                                lambda x: x.mean(dim=(2, 3)), lambda x: x.sum(dim=1)],
                         ids=["sum-method", "sum-function", "mean", "sum-channels"])
def test_sum_pooling_norm_against_a_dense_svd(fn):
    shape = (2, 3, 5)
    assert _stated(fn, shape) == pytest.approx(_dense_norm(fn, shape), rel=1e-8)
    assert _stated(lambda x: x.sum(dim=(2, 3)), shape) == pytest.approx(math.sqrt(15), rel=1e-8)


@pytest.mark.parametrize("fn", [
    lambda x: F.avg_pool2d(x, 2),
    lambda x: F.avg_pool2d(x, 3, stride=2, padding=1),
    lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False),
    lambda x: F.avg_pool2d(x, 2, ceil_mode=True),
    lambda x: F.avg_pool2d(x, (3, 2), stride=(1, 2), padding=(1, 0), ceil_mode=True, count_include_pad=False),
    lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, divisor_override=2),
    nn.AvgPool2d(3, stride=1, padding=1),
    nn.AdaptiveAvgPool2d((2, 3)),
    lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
    lambda x: F.interpolate(x, size=(11, 4), mode="nearest"),
    lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
    lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear", align_corners=True),
    nn.Upsample(scale_factor=3, mode="nearest"),
], ids=["avg2", "avg3s2p1", "avg-exclude-pad", "avg-ceil", "avg-mixed", "avg-divisor", "AvgPool2d",
        "AdaptiveAvgPool2d", "nearest2x", "nearest-size", "bilinear2x", "bilinear-aligned", "Upsample3x"])
def test_pooling_and_upsampling_norms_against_a_dense_svd(fn):
    shape = (2, 5, 7)
    stated = network_upper_bound(fn if isinstance(fn, nn.Module) else _Lambda(fn), shape, _exact_layer_upper)
    assert stated == pytest.approx(_dense_norm(fn, shape), rel=1e-8)


def test_stated_norms_of_the_sngan_resnet_ops():
    assert _stated(lambda x: F.avg_pool2d(x, 2), (4, 8, 8)) == pytest.approx(0.5, rel=1e-8)  # 1/sqrt(2 * 2)
    assert _stated(lambda x: F.interpolate(x, scale_factor=2), (4, 8, 8)) == pytest.approx(2.0, rel=1e-8)
    assert _stated(lambda x: torch.cat([x, 2 * x], dim=1), (2, 3, 3)) == pytest.approx(math.sqrt(5))
    assert _stated(lambda x: F.leaky_relu(x, 0.2).flatten(1) * -3, (2, 3, 3)) == pytest.approx(3.0)


def test_max_pooling_bound_holds():
    torch.manual_seed(7)
    fn, shape = (lambda x: F.max_pool2d(x, 3, stride=2, padding=1)), (1, 6, 6)
    stated = _stated(fn, shape)
    x = torch.randn(200, *shape, dtype=torch.float64)
    y = x + 1e-3 * torch.randn_like(x)
    ratios = (fn(x) - fn(y)).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)
    assert float(ratios.max()) <= stated == pytest.approx(2.0)  # each entry in at most 2 x 2 windows


class _ConvThenFc(nn.Module):
    """conv -> `between` -> fc: the op in the middle decides the bound."""

    def __init__(self, between):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc, self.between = nn.Conv2d(2, 2, 3, padding=1), nn.Linear(2 * 6 * 6, 1), between

    def forward(self, x):
        return self.between(self, self.conv(x))


def _in_place_read_later(m, h):
    h.mul_(10.0)  # h is read again below: the write must not be lost
    return m.fc(h.flatten(1))


def _in_place_through_a_view(m, h):
    v = h.view(1, -1)
    v.mul_(10.0)  # writes into h through its view
    return m.fc(h.flatten(1))


def _in_place_reassigned(m, h):
    h = h.mul_(10.0)
    return m.fc(h.flatten(1))


def _transposed_output(m, h):
    return m.fc(h.flatten(1)).T


@pytest.mark.parametrize("between", [_in_place_read_later, _in_place_through_a_view])
def test_an_in_place_write_read_later_is_refused(between):
    """Composed node by node, a later read of the written tensor would take its value from before
    the write (the factor 10 lost: an upper bound below the true constant)."""
    with pytest.raises(NoCertifiedBound, match="the in-place mul_ at .* changes a value that .* reads later"):
        network_lipschitz_bounds(_ConvThenFc(between), (2, 6, 6))


@pytest.mark.parametrize("between", [_in_place_reassigned, _transposed_output])
def test_in_place_results_and_transposes_are_bounded_as_what_they_compute(between):
    D = _ConvThenFc(between)
    lower, upper = network_lipschitz_bounds(D, (2, 6, 6))
    plain = _ConvThenFc(lambda m, h: m.fc(h.flatten(1)))
    exact = _dense_norm(_unbiased(copy.deepcopy(D)).double().eval(), (2, 6, 6))
    assert lower <= exact <= upper
    factor = 10.0 if between is _in_place_reassigned else 1.0
    assert upper == pytest.approx(factor * network_lipschitz_bounds(plain, (2, 6, 6))[1], rel=1e-9)


class _ScaledConv(nn.Conv2d):
    """A Conv2d whose own forward computes something else than the layer it extends."""

    def forward(self, x):
        return super().forward(x) * 10.0


def test_a_layer_subclass_with_its_own_forward_is_traced_not_taken_as_the_layer():
    """Taken as the Conv2d it extends, the bound would miss the factor 10. Traced, its forward calls
    F.conv2d: refused from the module tree, bounded from the recorded forward (the audit)."""
    from sngan.audit import audit

    torch.manual_seed(0)
    D = nn.Sequential(_ScaledConv(2, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 6 * 6, 1))
    with pytest.raises(NoCertifiedBound, match="F.conv2d called directly"):
        network_lipschitz_bounds(D, (2, 6, 6))
    with pytest.raises(NoCertifiedBound, match="F.conv2d called directly"):
        network_lipschitz_bounds(D[0], (2, 6, 6))
    whole = audit(D, (2, 6, 6))["whole_network"]
    exact = _dense_norm(_unbiased(copy.deepcopy(D)).double().eval(), (2, 6, 6))
    assert whole["lower"] <= exact <= whole["upper"]
    assert whole["lower"] == pytest.approx(exact, rel=1e-5)  # a linear map: its gradient is its row


class _HandWrittenSN(nn.Module):
    """A forward that divides its weight by a norm it computes in float32, where the lower bound's
    float64 copy computes it again in float64: two roundings of the same function."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 6))

    def forward(self, x):
        return F.linear(x, self.w / torch.linalg.vector_norm(self.w * 1.37) * 1.37 * 0.7)


@pytest.mark.parametrize("seed", range(6))
def test_the_audits_interval_holds_across_the_roundings_of_a_computed_weight(seed):
    """A single linear map: the upper bound is exact (0.7 times its unit row), so the lower one,
    from the float64 copy, must give way by the float32 rounding of the weight."""
    from sngan.audit import audit

    torch.manual_seed(seed)
    whole = audit(_HandWrittenSN(), (6,))["whole_network"]
    assert whole["lower"] <= whole["upper"] and whole["upper"] == pytest.approx(0.7, rel=1e-6)
    assert whole["lower"] == pytest.approx(0.7, rel=1e-5)
