"""sngan.sigma against independent references: dense SVDs of the layer's full matrix."""

import pytest
import torch
from torch import nn

from helpers import dense_sigma
from sngan.linalg.operators import input_shape
from sngan.sigma import effective_weight, matrix_sigma, operator_sigma, operator_sigma_bounds
from sngan.spectral import VARIANTS, apply_spectral_norm, reshape_dim


CONFIGS = [
    # (layer factory, input size)
    (lambda: nn.Conv2d(3, 4, 3, padding=1), (8, 8)),
    (lambda: nn.Conv2d(3, 4, 3, padding=0), (8, 8)),
    (lambda: nn.Conv2d(3, 4, 3, padding=2), (6, 7)),
    (lambda: nn.Conv2d(2, 3, 1), (5, 5)),
    (lambda: nn.Conv2d(2, 3, 5, padding=2), (9, 6)),
    (lambda: nn.Conv2d(3, 4, 4, stride=2, padding=1), (8, 8)),
    (lambda: nn.Conv2d(3, 4, 4, stride=2, padding=1), (9, 7)),
    (lambda: nn.Conv2d(2, 4, 3, stride=3, padding=1), (10, 10)),
    (lambda: nn.Conv2d(2, 3, 3, stride=(1, 2), padding=(0, 1)), (7, 8)),
    (lambda: nn.Conv2d(3, 4, 3, padding="same"), (7, 9)),
    (lambda: nn.Conv2d(3, 4, 4, padding="same"), (6, 6)),  # asymmetric 'same'
    (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), (6, 6)),
    (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (6, 7)),
    (lambda: nn.Conv2d(3, 4, 3, padding=2, padding_mode="replicate"), (6, 6)),
    (lambda: nn.Conv2d(2, 4, 3, padding=2, dilation=2), (8, 8)),
    (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), (6, 6)),
    (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), (6, 5)),  # depthwise
    (lambda: nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1), (5, 5)),
    (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), (4, 5)),
    (lambda: nn.ConvTranspose2d(4, 6, 3, stride=1, padding=1, groups=2), (5, 5)),
    (lambda: nn.ConvTranspose2d(2, 3, 3, stride=3, dilation=2), (3, 4)),
    (lambda: nn.Conv1d(3, 4, 5, padding=2), (20,)),
    (lambda: nn.Conv1d(3, 4, 3, stride=2, padding="valid"), (17,)),
    (lambda: nn.Conv1d(3, 4, 4, padding="same", padding_mode="circular"), (12,)),
    (lambda: nn.ConvTranspose1d(3, 2, 4, stride=2, padding=1, output_padding=1), (9,)),
    (lambda: nn.Linear(20, 7), None),
    (lambda: nn.Embedding(11, 6), None),
]


@pytest.mark.parametrize("index", range(len(CONFIGS)))
@pytest.mark.filterwarnings("ignore:Using padding=.same.")
def test_operator_sigma_equals_dense_svd(index):
    torch.manual_seed(index)
    make, size = CONFIGS[index]
    layer = make()
    measured = operator_sigma(layer, size)
    assert measured == pytest.approx(dense_sigma(layer, size), rel=1e-4)


def test_operator_sigma_of_a_matrix_layer_is_its_matrix_sigma():
    torch.manual_seed(0)
    linear = nn.Linear(30, 12)
    assert operator_sigma(linear, None) == pytest.approx(matrix_sigma(linear.weight), rel=1e-6)


@pytest.mark.parametrize("dim", [0, 1])
def test_matrix_sigma_is_the_top_singular_value_of_the_reshaped_kernel(dim):
    torch.manual_seed(1)
    weight = torch.randn(4, 6, 3, 3, dtype=torch.float64)
    # independent reshape: explicit permutation of the dims, then SVD
    perm = [dim] + [d for d in range(4) if d != dim]
    mat = weight.permute(*perm).reshape(weight.shape[dim], -1)
    assert matrix_sigma(weight, dim) == pytest.approx(float(torch.linalg.svd(mat)[1][0]), rel=1e-12)


def test_stride_one_operator_norm_lies_between_one_and_sqrt_k_times_the_matrix_norm():
    torch.manual_seed(2)
    layer = nn.Conv2d(3, 8, 3, padding=1)
    ratio = operator_sigma(layer, (16, 16)) / matrix_sigma(layer.weight)
    assert 1.0 <= ratio <= 3.0


def _state(layer):
    return {k: v.clone() for k, v in layer.state_dict().items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_measuring_changes_nothing(variant):
    torch.manual_seed(3)
    layer = apply_spectral_norm(nn.Conv2d(3, 5, 3, padding=1), variant)
    layer(torch.randn(2, 3, 8, 8))  # operator learns its input size; naive divides once
    before, rng = _state(layer), torch.get_rng_state()
    modes = [m.training for m in layer.modules()]
    weight = effective_weight(layer)
    matrix_sigma(weight, reshape_dim(layer))
    operator_sigma(layer, (8, 8))
    after = _state(layer)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(rng, torch.get_rng_state())
    assert modes == [m.training for m in layer.modules()]
    # effective_weight is the weight the forward pass uses
    with torch.no_grad():
        layer.eval()
        x = torch.randn(1, 3, 8, 8)
        expected = torch.nn.functional.conv2d(x, weight, layer.bias, padding=1)
        torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)


# --- certified intervals: lower <= exact <= upper -----------------------------------------------

def _spread():
    """Layer shapes across kernel 1-5, stride 1-2, padding 0-2, dilation, groups, transposed convs,
    1-64 channels and 4x4-24x24 inputs (32x32: test_the_gap_...), each small enough (<= ~4000 input dims) for a dense SVD."""
    shapes = []
    for k, stride, padding, size, c_in, c_out in [
            (1, 1, 0, (12, 12), 16, 8), (2, 2, 0, (8, 8), 4, 6), (3, 1, 1, (4, 4), 64, 32),
            (3, 1, 1, (24, 24), 3, 4), (3, 2, 1, (16, 16), 8, 16), (4, 2, 1, (16, 16), 16, 16),
            (4, 2, 2, (11, 9), 5, 3), (5, 1, 2, (10, 10), 8, 4), (5, 2, 0, (13, 12), 2, 7),
            (3, 1, 0, (20, 20), 1, 1), (4, 1, 2, (7, 5), 3, 64), (2, 1, 1, (6, 6), 32, 2)]:
        shapes.append((lambda k=k, s=stride, p=padding, i=c_in, o=c_out: nn.Conv2d(i, o, k, stride=s, padding=p),
                       size))
    shapes += [
        (lambda: nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4), (12, 12)),
        (lambda: nn.Conv2d(6, 4, 3, stride=2, padding=1, groups=2), (9, 9)),
        (lambda: nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), (8, 8)),
        (lambda: nn.ConvTranspose2d(4, 6, 5, stride=2, padding=2, output_padding=1), (6, 7)),
        (lambda: nn.Conv2d(4, 8, 3, padding=1, padding_mode="circular"), (16, 16)),
        (lambda: nn.Conv2d(4, 8, 3, stride=2, padding=1, padding_mode="circular"), (9, 8)),
        (lambda: nn.Conv2d(4, 8, 3, padding=2, padding_mode="reflect"), (8, 8)),
        (lambda: nn.Conv1d(8, 4, 3, stride=2, padding=1), (33,)),
        (lambda: nn.Conv3d(2, 3, 3, stride=(1, 2, 2), padding=1), (4, 6, 6)),
    ]
    return shapes


@pytest.mark.parametrize("make,size", CONFIGS + _spread())
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.filterwarnings("ignore:Using padding=.same.")
def test_certified_interval_brackets_the_dense_norm(make, size, normalized):
    torch.manual_seed(0)
    layer = make()
    if normalized and not isinstance(layer, nn.Embedding):
        apply_spectral_norm(layer, "reshaped")
        with torch.no_grad():
            for _ in range(20):
                layer(torch.randn(*input_shape(layer, size)) if size else torch.randn(1, layer.in_features))
    lower, upper = operator_sigma_bounds(layer, size)
    exact = dense_sigma(_plain_copy(layer), size)
    assert lower <= exact * (1 + 1e-5) and exact <= upper * (1 + 1e-5), (lower, exact, upper)
    assert lower >= exact * (1 - 1e-4)  # the Lanczos vector is converged: the lower bound is tight


def _plain_copy(layer):
    """An unnormalized copy of `layer` holding the weight its forward uses now."""
    import copy

    weight = effective_weight(layer)
    plain = copy.deepcopy(layer)
    if hasattr(plain, "parametrizations"):
        from torch.nn.utils import parametrize
        parametrize.remove_parametrizations(plain, "weight", leave_parametrized=False)
    plain.weight = nn.Parameter(weight.clone())
    return plain


@pytest.mark.parametrize("make,size", [
    (lambda: nn.Conv2d(5, 7, 3, padding=1, padding_mode="circular"), (8, 8)),
    (lambda: nn.Conv2d(3, 4, 5, padding=2, padding_mode="circular"), (6, 9)),
    (lambda: nn.Conv1d(4, 2, 3, padding=1, padding_mode="circular"), (16,))])
def test_circular_convs_get_the_exact_fft_norm(make, size):
    """Sedghi et al.: a circular conv's norm is the largest norm of its kernel's DFT matrices."""
    torch.manual_seed(1)
    layer = make()
    weight = layer.weight.detach().double()
    folded = torch.zeros(*weight.shape[:2], *size, dtype=torch.float64)
    folded[(slice(None), slice(None), *(slice(0, k) for k in weight.shape[2:]))] = weight
    symbol = torch.fft.fftn(folded, dim=tuple(range(2, 2 + len(size)))).flatten(2).permute(2, 0, 1)
    sedghi = float(torch.linalg.matrix_norm(symbol, ord=2).max())
    lower, upper = operator_sigma_bounds(layer, size)
    assert upper == pytest.approx(sedghi, rel=1e-8) and lower == pytest.approx(sedghi, rel=1e-6)


def test_the_gap_is_small_where_the_input_is_large():
    """Stride-1 3x3 layers of a reshaped-SN D on 16-32 px inputs: within 1%."""
    torch.manual_seed(0)
    for c_in, c_out, size in ((3, 64, 32), (64, 64, 32), (32, 64, 16)):
        layer = apply_spectral_norm(nn.Conv2d(c_in, c_out, 3, padding=1), "reshaped")
        with torch.no_grad():
            for _ in range(50):
                layer(torch.randn(1, c_in, size, size))
        lower, upper = operator_sigma_bounds(layer, (size, size))
        assert upper / lower - 1 < 0.01, (c_in, c_out, size, lower, upper)


def test_a_warm_start_reaches_the_cold_start_value():
    """The monitor restarts Lanczos from the previous log's vector: same value, to the tolerance."""
    from sngan.sigma import operator_sigma_interval

    torch.manual_seed(0)
    layer = nn.Conv2d(16, 16, 3, padding=1)
    vectors: dict = {}
    first = operator_sigma_interval(layer, (12, 12), vectors=vectors)
    assert first == operator_sigma_interval(layer, (12, 12))  # the first call starts cold
    with torch.no_grad():
        layer.weight.add_(1e-2 * torch.randn_like(layer.weight))  # a few updates later
    warm = operator_sigma_interval(layer, (12, 12), vectors=vectors)
    cold = operator_sigma_interval(layer, (12, 12))
    exact = dense_sigma(layer, (12, 12))
    assert warm[0] == pytest.approx(cold[0], rel=1e-6) and warm[0] == pytest.approx(exact, rel=1e-6)
    assert warm[1] <= exact * (1 + 1e-9) and warm[2] == pytest.approx(cold[2], rel=1e-10)


@pytest.mark.parametrize("make,size", [
    (lambda: nn.Conv2d(6, 5, 3, padding=1, padding_mode="circular"), (10, 10)),
    (lambda: nn.Conv2d(8, 12, 4, stride=2, padding=1), (12, 12)),
    (lambda: nn.Conv2d(8, 8, 3, padding=1, groups=2), (9, 9))])
def test_the_upper_bound_does_not_depend_on_its_start_vectors(make, size, monkeypatch):
    """Start vectors only choose which frequency gets an exact eigendecomposition first; the others
    are certified by Cholesky, and those it fails on are decomposed too. All-zero start vectors
    pick the first frequency whatever its norm: that path must give the same bound."""
    from sngan.linalg import bounds

    torch.manual_seed(2)
    layer = make()
    weight = layer.weight.detach()
    cold = bounds.conv_upper_bound(layer, weight, size)
    warm: dict = {}
    bounds.conv_upper_bound(layer, weight, size, warm=warm)
    (key, vectors), = warm.items()
    warm[key] = torch.zeros_like(vectors)
    decompositions = []
    eigvalsh = torch.linalg.eigvalsh
    monkeypatch.setattr(torch.linalg, "eigvalsh", lambda a: decompositions.append(len(a.shape)) or eigvalsh(a))
    forced = bounds.conv_upper_bound(layer, weight, size, warm=warm)
    assert len(decompositions) == 2  # the first frequency, then the ones Cholesky could not certify
    assert forced == pytest.approx(cold, rel=1e-10)
    assert dense_sigma(layer, size) <= cold * (1 + 1e-12)
    if layer.padding_mode == "circular":  # stride 1, same size: the bound is the exact norm
        assert cold == pytest.approx(dense_sigma(layer, size), rel=1e-8)


def test_the_warm_started_matrix_sigma_is_the_dense_one():
    torch.manual_seed(3)
    weight = torch.randn(32, 16, 3, 3)
    vectors: dict = {}
    for _ in range(3):
        weight += 1e-2 * torch.randn_like(weight)
        assert matrix_sigma(weight, vectors=vectors, key="w") == pytest.approx(matrix_sigma(weight), rel=1e-8)


@pytest.mark.parametrize("index", [0, 2, 5, 12, 17, 21])
@pytest.mark.filterwarnings("ignore:Using padding=.same.")
def test_lanczos_testing_convergence_every_few_steps_still_converges(index):
    """On an accelerator the Lanczos convergence test runs every few steps (each test reads back
    to the host); the steps in between must not spoil the result, here forced on the CPU."""
    from sngan.linalg.operators import linear_map, top_singular_pair

    torch.manual_seed(index)
    make, size = CONFIGS[index]
    layer = make().double()
    exact = dense_sigma(layer, size)
    for every in (1, 3, 8):
        sigma, vector = top_singular_pair(linear_map(layer), layer.weight, input_shape(layer, size), tol=1e-8,
                                          check_every=every)
        assert sigma == pytest.approx(exact, rel=1e-7)
        image = linear_map(layer)(vector.view(input_shape(layer, size)), layer.weight.detach())
        assert float(image.norm() / vector.norm()) == pytest.approx(exact, rel=1e-6)


def test_lanczos_stops_at_an_invariant_subspace_between_two_tests():
    """A 1x1 conv with one channel is a multiple of the identity: the first step already spans an
    invariant subspace (beta = 0). With tests every 8 steps the steps after it divide by ~0; the
    result must still be the exact norm, not NaN."""
    from sngan.linalg.operators import linear_map, top_singular_pair

    layer = nn.Conv2d(1, 1, 1, bias=False).double()
    with torch.no_grad():
        layer.weight.fill_(-0.7)
    sigma, vector = top_singular_pair(linear_map(layer), layer.weight, (1, 1, 4, 4), check_every=8)
    assert sigma == pytest.approx(0.7, rel=1e-12) and torch.isfinite(vector).all()


def test_the_bound_refuses_an_input_size_of_another_dimension():
    """A 2-d conv given a 3-d size would be bounded on the first two dimensions alone."""
    from sngan.linalg import bounds

    layer = nn.Conv2d(2, 2, 3)
    with pytest.raises(ValueError, match=r"input size \(2, 6, 6\) for Conv2d, which takes 2 spatial dimensions"):
        bounds.conv_upper_bound(layer, layer.weight, (2, 6, 6))
