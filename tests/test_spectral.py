"""The five variants: what each does to a layer, checked against torch's built-in and dense SVDs."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from sngan.sigma import matrix_sigma, operator_sigma
from sngan.spectral import VARIANTS, apply_spectral_norm, normalized_layers, reshape_dim


class SmallD(nn.Module):
    """A discriminator-shaped stack: stride-1 and stride-2 convs, then a linear head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 4, stride=2, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 1)

    def forward(self, x):
        h = F.leaky_relu(self.conv1(x), 0.1)
        h = F.leaky_relu(self.conv2(h), 0.1)
        return self.fc(h.flatten(1)).flatten()


def test_variants_and_unknown_variant():
    assert VARIANTS == ("none", "naive", "reshaped", "builtin", "operator")
    with pytest.raises(ValueError, match="none, naive, reshaped, builtin, operator"):
        apply_spectral_norm(nn.Linear(2, 2), "spectral")


@pytest.mark.parametrize("variant", VARIANTS[1:])
def test_every_supported_layer_is_normalized_once(variant):
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Conv2d(2, 3, 3), nn.ConvTranspose2d(3, 2, 4, 2, 1),
                          nn.Linear(4, 5), nn.Embedding(6, 4), nn.BatchNorm2d(3))
    assert apply_spectral_norm(model, variant) is model
    for layer in model[:5]:
        assert parametrize.is_parametrized(layer, "weight") or hasattr(layer, "naive_u")
    assert not parametrize.is_parametrized(model[5], "weight")
    with pytest.raises(ValueError, match="already normalized"):
        apply_spectral_norm(model, variant)


def test_none_changes_nothing():
    torch.manual_seed(0)
    model = SmallD()
    reference = copy.deepcopy(model)
    apply_spectral_norm(model, "none")
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(model(x), reference(x))
    assert model.state_dict().keys() == reference.state_dict().keys()


# --- reshaped vs torch's built-in -------------------------------------------------------------

LAYERS = [
    lambda: nn.Conv2d(3, 6, 3, padding=1),
    lambda: nn.Conv2d(4, 5, 4, stride=2, padding=1),
    lambda: nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1),
    lambda: nn.Linear(7, 5),
    lambda: nn.Embedding(9, 4),
]


def _input_for(layer, batch=3):
    if isinstance(layer, nn.Embedding):
        return torch.randint(0, layer.num_embeddings, (batch, 2))
    if isinstance(layer, nn.Linear):
        return torch.randn(batch, layer.in_features)
    return torch.randn(batch, layer.in_channels, 6, 6)


def _builtin_and_reshaped(make):
    torch.manual_seed(0)
    builtin = apply_spectral_norm(make(), "builtin")
    reshaped = apply_spectral_norm(make(), "reshaped")
    with torch.no_grad():  # same weights, same u/v
        reshaped.parametrizations.weight.original.copy_(builtin.parametrizations.weight.original)
        reshaped.parametrizations.weight[0]._u.copy_(builtin.parametrizations.weight[0]._u)
        reshaped.parametrizations.weight[0]._v.copy_(builtin.parametrizations.weight[0]._v)
        if getattr(builtin, "bias", None) is not None:
            reshaped.bias.copy_(builtin.bias)
    return builtin, reshaped


@pytest.mark.parametrize("make", LAYERS)
def test_reshaped_matches_builtin_outputs_and_gradients(make):
    builtin, reshaped = _builtin_and_reshaped(make)
    for step in range(3):  # training mode: both advance u/v identically
        x = _input_for(builtin)
        out_b, out_r = builtin(x), reshaped(x)
        torch.testing.assert_close(out_r, out_b, rtol=1e-6, atol=1e-6)
        g = torch.randn_like(out_b)
        grad_b, = torch.autograd.grad(out_b, builtin.parametrizations.weight.original, g)
        grad_r, = torch.autograd.grad(out_r, reshaped.parametrizations.weight.original, g)
        torch.testing.assert_close(grad_r, grad_b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(reshaped.parametrizations.weight[0]._u,
                               builtin.parametrizations.weight[0]._u, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", ["reshaped", "builtin"])
@pytest.mark.parametrize("make", LAYERS[:4])
def test_matrix_variants_drive_matrix_sigma_to_one(variant, make):
    torch.manual_seed(1)
    layer = apply_spectral_norm(make(), variant)
    for _ in range(200):
        layer(_input_for(layer, batch=1))
    assert matrix_sigma(layer.weight, reshape_dim(layer)) == pytest.approx(1.0, abs=1e-3)


def test_reshaped_gradient_flows_through_sigma():
    """d<g, W/s>/dW = g/s - <g, W> u v^T / s^2 (Miyato et al. eq. 12), computed by hand."""
    torch.manual_seed(2)
    layer = apply_spectral_norm(nn.Linear(6, 4).double(), "reshaped").eval()
    sn = layer.parametrizations.weight[0]
    w = layer.parametrizations.weight.original
    g = torch.randn(4, 6, dtype=torch.float64)
    grad, = torch.autograd.grad((layer.weight * g).sum(), w)
    sigma = sn._u @ w @ sn._v
    expected = g / sigma - (g * w).sum() * torch.outer(sn._u, sn._v) / sigma**2
    torch.testing.assert_close(grad, expected.detach())


# --- ported from PyTorch's own spectral-norm tests (test/nn/test_parametrization.py) ------------

def test_ported_buffers_and_state_dict_keys():
    m = apply_spectral_norm(nn.Linear(5, 7), "reshaped")
    sn = m.parametrizations.weight[0]
    assert sn._u.shape == (7,) and sn._v.shape == (5,)
    assert "original" in m.parametrizations.weight._parameters
    assert "_u" in sn._buffers and "_v" in sn._buffers
    assert "weight" not in m._parameters and "weight" not in m._buffers
    assert set(m.state_dict()) == {"bias", "parametrizations.weight.original",
                                   "parametrizations.weight.0._u", "parametrizations.weight.0._v"}


def test_ported_transposed_conv_normalizes_along_dim_one():
    m = apply_spectral_norm(nn.ConvTranspose2d(3, 4, (5, 6)), "reshaped")
    m(torch.randn(2, 3, 10, 12))
    assert m.parametrizations.weight[0]._u.shape == m.parametrizations.weight.original[0, :, 0, 0].shape


def test_ported_forward_equals_one_hand_written_power_step():
    torch.manual_seed(3)
    m = apply_spectral_norm(nn.Linear(5, 7), "reshaped")
    sn = m.parametrizations.weight[0]
    x = torch.randn(3, 5)
    w = m.parametrizations.weight.original.detach().clone()
    u = F.normalize(w @ sn._v, dim=0, eps=1e-12)
    v = F.normalize(w.T @ u, dim=0, eps=1e-12)
    expected = F.linear(x, w / torch.dot(u, w @ v), m.bias)
    torch.testing.assert_close(m(x), expected)


def test_ported_eval_mode_does_not_update_u_v_and_passes_gradcheck():
    torch.manual_seed(4)
    m = apply_spectral_norm(nn.Linear(5, 7).double(), "reshaped")
    m(torch.randn(2, 5, dtype=torch.float64))
    m.eval()
    sn = m.parametrizations.weight[0]
    u, v = sn._u.clone(), sn._v.clone()
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))
    assert torch.equal(sn._u, u) and torch.equal(sn._v, v)


def test_ported_training_mode_gradcheck_with_u_v_reset():
    torch.manual_seed(5)
    m = apply_spectral_norm(nn.Conv2d(2, 3, 3).double(), "reshaped")
    sn = m.parametrizations.weight[0]
    u, v = sn._u.clone(), sn._v.clone()

    def fn(x):
        sn._u.copy_(u)
        sn._v.copy_(v)
        return m(x)

    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,))


# --- every variant: shared behaviour --------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_two_forwards_then_one_backward(variant):
    torch.manual_seed(6)
    d = apply_spectral_norm(SmallD(), variant)
    loss = F.relu(1 - d(torch.randn(4, 3, 8, 8))).mean() + F.relu(1 + d(torch.randn(4, 3, 8, 8))).mean()
    loss.backward()
    for _, layer in normalized_layers(d):
        param = (layer.parametrizations.weight.original
                 if parametrize.is_parametrized(layer, "weight") else layer.weight)
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0


def _tensors(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_eval_mode_changes_nothing(variant):
    torch.manual_seed(7)
    d = apply_spectral_norm(SmallD(), variant)
    for _ in range(3):
        d(torch.randn(4, 3, 8, 8))
    d.eval()
    before = _tensors(d)
    x = torch.randn(4, 3, 8, 8)
    first = d(x)
    for _ in range(3):
        assert torch.equal(d(x), first)
    after = _tensors(d)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_round_trip_reproduces_eval_outputs(variant):
    torch.manual_seed(8)
    d = apply_spectral_norm(SmallD(), variant)
    for _ in range(3):
        d(torch.randn(4, 3, 8, 8))
    torch.manual_seed(99)  # a freshly built model with other weights and vectors
    fresh = apply_spectral_norm(SmallD(), variant)
    fresh.load_state_dict(d.state_dict())
    d.eval()
    fresh.eval()
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(fresh(x), d(x))
    # and training continues identically
    d.train()
    fresh.train()
    assert torch.equal(fresh(x), d(x))


# --- naive -----------------------------------------------------------------------------------

def test_naive_divides_in_place_keeps_u_fixed_and_has_the_plain_gradient():
    torch.manual_seed(9)
    layer = apply_spectral_norm(nn.Conv2d(3, 8, 3, padding=1), "naive")
    param = layer.weight
    before = param.detach().clone()
    u = layer.naive_u.clone()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = layer(x)
    assert layer.weight is param and not torch.equal(param.detach(), before)  # in place
    ratio = before / param.detach()
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))  # divided by one scalar
    # gradient: the plain conv's, as if sigma were a constant
    g = torch.randn_like(out)
    grad_w, = torch.autograd.grad(out, param, g)
    w = param.detach().clone().requires_grad_(True)
    ref, = torch.autograd.grad(F.conv2d(x, w, layer.bias, padding=1), w, g)
    torch.testing.assert_close(grad_w, ref)
    for _ in range(5):
        layer(x)
    assert torch.equal(layer.naive_u, u)
    assert "naive_u" in layer.state_dict()


def test_naive_fixed_u_underestimates_sigma():
    """One power step from a fixed random u: after the division, the true matrix sigma stays above 1."""
    torch.manual_seed(10)
    sigmas = []
    for _ in range(5):
        layer = apply_spectral_norm(nn.Conv2d(64, 64, 3, padding=1), "naive")
        for _ in range(20):
            layer(torch.randn(1, 64, 4, 4))
        sigmas.append(matrix_sigma(layer.weight))
    assert min(sigmas) > 1.05


# --- operator -------------------------------------------------------------------------------

OPERATOR_LAYERS = [
    (lambda: nn.Conv2d(3, 16, 3, padding=1), (16, 16)),
    (lambda: nn.Conv2d(16, 16, 4, stride=2, padding=1), (16, 16)),
    (lambda: nn.Conv2d(4, 8, 3, padding=1, padding_mode="reflect"), (9, 7)),
    (lambda: nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=2), (10, 10)),
    (lambda: nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), (6, 6)),
    (lambda: nn.Conv1d(4, 6, 5, padding=2), (20,)),
]


@pytest.mark.parametrize("make,size", OPERATOR_LAYERS)
def test_operator_drives_operator_sigma_to_one(make, size):
    torch.manual_seed(11)
    layer = apply_spectral_norm(make(), "operator")
    for _ in range(100):
        layer(torch.randn(1, layer.in_channels, *size))
    assert operator_sigma(layer, size) == pytest.approx(1.0, abs=2e-3)
    if not isinstance(layer, nn.ConvTranspose2d):
        # a full receptive field fits in the input, so the kernel matrix is a block of the operator
        assert matrix_sigma(layer.weight, 0) <= operator_sigma(layer, size) + 1e-9


def test_operator_linear_layers_use_the_matrix_norm():
    torch.manual_seed(12)
    fc = apply_spectral_norm(nn.Linear(10, 3), "operator")
    for _ in range(50):
        fc(torch.randn(2, 10))
    assert matrix_sigma(fc.weight) == pytest.approx(1.0, abs=1e-3)


def test_operator_input_size_change():
    torch.manual_seed(13)
    layer = apply_spectral_norm(nn.Conv2d(3, 8, 3, padding=1), "operator")
    sn = layer.parametrizations.weight[0]
    layer(torch.randn(1, 3, 8, 8))
    assert sn.input_size == (8, 8)
    layer.eval()  # eval: the stored normalization is kept, whatever the input size
    x_before = sn._x.clone()
    layer(torch.randn(1, 3, 16, 16))
    assert sn.input_size == (8, 8) and torch.equal(sn._x, x_before)
    layer.train()  # training: restart at the new size, with a warning
    with pytest.warns(UserWarning, match="input size changed"):
        layer(torch.randn(1, 3, 16, 16))
    assert sn.input_size == (16, 16)
    for _ in range(100):
        layer(torch.randn(1, 3, 16, 16))
    assert operator_sigma(layer, (16, 16)) == pytest.approx(1.0, abs=2e-3)


def test_operator_weight_read_before_first_forward_is_a_clear_error():
    layer = apply_spectral_norm(nn.Conv2d(3, 8, 3), "operator")
    with pytest.raises(RuntimeError, match="before its first forward"):
        layer.weight


# --- edge cases -------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["reshaped", "operator"])
def test_an_all_zero_weight_stays_zero_not_nan(variant):
    layer = nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        layer.weight.zero_()
    apply_spectral_norm(layer, variant)
    out = layer(torch.randn(2, 3, 6, 6))
    assert torch.isfinite(out).all() and torch.all(layer.weight == 0)
    out.sum().backward()  # and the gradient is finite too
    assert torch.isfinite(layer.parametrizations.weight.original.grad).all()


def test_complex_weights_are_refused():
    with pytest.raises(ValueError, match="complex weights"):
        apply_spectral_norm(nn.Linear(4, 3, dtype=torch.complex64), "reshaped")


def test_a_weight_matrix_of_an_unsupported_layer_is_refused_by_name():
    D = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    D.add_module("pair", nn.Bilinear(4, 4, 1))
    with pytest.raises(ValueError, match="cannot normalize pair"):
        apply_spectral_norm(D, "reshaped")
    apply_spectral_norm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), "reshaped")  # 1-d weights: fine
