"""The variants' lean code computes what the textbook expressions compute, bit for bit.

sngan.spectral writes the power iteration, the division by sigma and its gradient with as few aten
ops as it can (each op is a kernel launch on a GPU). Training must not notice: every output,
gradient and power-iteration vector here is compared with torch.equal against the expressions as
the papers (and this package, before) write them, through plain autograd.
"""

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.profiler import ProfilerActivity, profile

from sngan.spectral import _DivideBySigma, apply_spectral_norm, weight_matrix

EPS = 1e-12


def _textbook_reshaped(sn, weight):
    """One training-mode forward of reshaped SN as the textbook writes it (and sngan did before)."""
    mat = weight_matrix(weight, sn.dim)
    with torch.no_grad():
        F.normalize(mat.detach() @ sn._v, dim=0, eps=sn.eps, out=sn._u)
        F.normalize(mat.detach().T @ sn._u, dim=0, eps=sn.eps, out=sn._v)
    sigma = torch.dot(sn._u.clone(), mat @ sn._v.clone())
    return weight / sigma.clamp_min(sn.eps)


def _layer_map(layer):
    """x -> the layer's output without bias, with the weight passed in: the operator's A."""
    if isinstance(layer, nn.ConvTranspose2d):
        return lambda x, w: F.conv_transpose2d(x, w, None, layer.stride, layer.padding)
    return lambda x, w: F.conv2d(x, w, None, layer.stride, layer.padding)


def _textbook_operator(A, sn, weight):
    """Operator SN as its paper writes it: x <- A^T A x / ||A^T A x|| (the adjoint by autograd),
    then sigma = ||A x||."""
    with torch.no_grad():
        for _ in range(sn.n_power_iterations):
            with torch.enable_grad():
                x = sn._x.detach().requires_grad_(True)
                y = A(x, weight.detach())
                (ata_x,) = torch.autograd.grad(y, x, grad_outputs=y.detach())
            sn._x.copy_(ata_x / ata_x.norm().clamp_min(sn.eps))
    sigma = A(sn._x.clone(), weight).norm()
    return weight / sigma.clamp_min(sn.eps)


def _textbook_naive(layer, u, eps=EPS):
    """The naive recipe's in-place division, as written in its docstring."""
    with torch.no_grad():
        w = layer.weight.data.reshape(layer.weight.shape[0], -1)
        v = F.normalize(u @ w, dim=1, eps=eps)
        u_next = F.normalize(v @ w.T, dim=1, eps=eps)
        layer.weight.data.div_((u_next @ w @ v.T).squeeze())


LAYERS = {
    "conv": lambda: nn.Conv2d(3, 6, 3, padding=1),
    "strided conv": lambda: nn.Conv2d(4, 5, 4, stride=2, padding=1),
    "transposed conv": lambda: nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1),
    "linear": lambda: nn.Linear(7, 5),
}


def _input_for(layer):
    if isinstance(layer, nn.Linear):
        return torch.randn(3, layer.in_features)
    return torch.randn(3, layer.in_channels, 6, 6)


def _train_side_by_side(sn, textbook, weight, *, cached, steps=4):
    """Run `sn` and `textbook` (on a copy of sn's state) for `steps` training steps of plain SGD
    from the same weight; assert equal outputs, gradients and vectors at every step."""
    ref = copy.deepcopy(sn)
    w_new = weight.detach().clone().requires_grad_(True)
    w_ref = weight.detach().clone().requires_grad_(True)
    for _ in range(steps):
        if cached:  # the trainer's path: sigma uses the buffers themselves, no clones
            with parametrize.cached():
                out_new = sn(w_new)
        else:
            out_new = sn(w_new)
        out_ref = textbook(ref, w_ref)
        assert torch.equal(out_new, out_ref)
        g = torch.randn_like(out_ref)
        (grad_new,) = torch.autograd.grad(out_new, w_new, g)
        (grad_ref,) = torch.autograd.grad(out_ref, w_ref, g)
        assert torch.equal(grad_new, grad_ref)
        for name, buffer in ref.named_buffers():
            assert torch.equal(sn.get_buffer(name), buffer)
        with torch.no_grad():
            w_new -= 0.1 * grad_new
            w_ref -= 0.1 * grad_ref


CONVS = {name: make for name, make in LAYERS.items() if name != "linear"}
WEIGHTS = [(name, False) for name in LAYERS] + [(name, True) for name in CONVS]  # (layer, channels_last)
WEIGHT_IDS = [f"{name}-{'nhwc' if channels_last else 'nchw'}" for name, channels_last in WEIGHTS]


@pytest.mark.parametrize("cached", [False, True], ids=["plain", "cached"])
@pytest.mark.parametrize("name, channels_last", WEIGHTS, ids=WEIGHT_IDS)
def test_reshaped_is_bit_identical_to_the_textbook_expressions(name, channels_last, cached):
    torch.manual_seed(0)
    layer = apply_spectral_norm(LAYERS[name](), "reshaped")
    weight = layer.parametrizations.weight.original
    if channels_last:
        weight = weight.contiguous(memory_format=torch.channels_last)
    _train_side_by_side(layer.parametrizations.weight[0], _textbook_reshaped, weight, cached=cached)


@pytest.mark.parametrize("cached", [False, True], ids=["plain", "cached"])
@pytest.mark.parametrize("make", CONVS.values(), ids=CONVS.keys())  # a Linear layer gets `reshaped`
def test_operator_is_bit_identical_to_the_textbook_expressions(make, cached):
    torch.manual_seed(1)
    layer = apply_spectral_norm(make(), "operator")
    layer(_input_for(layer))  # the input size, and the warm-up iteration
    _train_side_by_side(layer.parametrizations.weight[0], functools.partial(_textbook_operator, _layer_map(layer)),
                        layer.parametrizations.weight.original, cached=cached)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_naive_is_bit_identical_to_its_recipe(channels_last):
    torch.manual_seed(2)
    layer = apply_spectral_norm(nn.Conv2d(3, 6, 3, padding=1), "naive")
    if channels_last:
        layer.to(memory_format=torch.channels_last)
    ref = copy.deepcopy(layer)
    ref._forward_pre_hooks.clear()
    x = torch.randn(2, 3, 6, 6)
    for _ in range(4):
        layer(x)  # the hook divides layer.weight in place
        _textbook_naive(ref, ref.naive_u)
        assert torch.equal(layer.weight, ref.weight)
        noise = 0.1 * torch.randn_like(layer.weight)  # an optimizer step between forwards
        with torch.no_grad():
            layer.weight += noise
            ref.weight += noise


@pytest.mark.parametrize("sigma", [2.5, EPS, 0.5 * EPS, 0.0, -1.0])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_divide_by_sigma_has_autograds_gradient(sigma, channels_last):
    """Also at and below the clamp (sigma == eps as float32 rounds it: no gradient to sigma there)."""
    torch.manual_seed(3)
    weight = torch.randn(4, 3, 2, 2)
    grad = torch.randn(4, 3, 2, 2)
    if channels_last:
        weight, grad = (t.contiguous(memory_format=torch.channels_last) for t in (weight, grad))
    results = []
    for divide in (lambda w, s: _DivideBySigma.apply(w, s, EPS), lambda w, s: w / s.clamp_min(EPS)):
        w = weight.clone().requires_grad_(True)
        s = torch.tensor(sigma, requires_grad=True)
        out = divide(w, s)
        results.append((out, *torch.autograd.grad(out, (w, s), grad)))
    for new, ref in zip(*results):
        assert torch.equal(new, ref)


def test_a_nan_sigma_gives_an_all_nan_weight_gradient_both_ways():
    """The one place the two differ: sigma's own gradient (NaN here, autograd's where() gives 0);
    the weight's gradient, the only one a training step sees, is all NaN either way."""
    for divide in (lambda w, s: _DivideBySigma.apply(w, s, EPS), lambda w, s: w / s.clamp_min(EPS)):
        w = torch.randn(4, 3, requires_grad=True)
        s = torch.tensor(float("nan"), requires_grad=True)
        out = divide(w, s)
        (grad,) = torch.autograd.grad(out, w, torch.randn(4, 3))
        assert out.isnan().all() and grad.isnan().all()


def _aten_ops(fn):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return [event.name for event in prof.events() if event.name.startswith("aten::")]


def test_vectors_are_cloned_only_where_a_backward_needs_them():
    torch.manual_seed(4)
    layer = apply_spectral_norm(nn.Linear(5, 4), "reshaped")

    def cached_weight():
        with parametrize.cached():
            layer.weight

    def weight_without_grad():
        with torch.no_grad():
            layer.weight

    assert _aten_ops(lambda: layer.weight).count("aten::clone") == 2  # u and v
    assert "aten::clone" not in _aten_ops(cached_weight)
    assert "aten::clone" not in _aten_ops(weight_without_grad)


def test_a_backward_across_two_cached_blocks_fails_loudly():
    """Inside a cached block sigma keeps the buffers themselves: a second block advances them in
    place, and autograd's version check refuses the stale backward instead of computing it."""
    torch.manual_seed(5)
    layer = apply_spectral_norm(nn.Linear(5, 4), "reshaped")
    x = torch.randn(2, 5)
    with parametrize.cached():
        first = layer(x)
    with parametrize.cached():
        second = layer(x)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (first.sum() + second.sum()).backward()
