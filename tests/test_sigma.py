"""sngan.sigma against independent references: dense SVDs of the layer's full matrix."""

import pytest
import torch
from torch import nn

from sngan.operators import input_shape
from sngan.sigma import effective_weight, matrix_sigma, operator_sigma
from sngan.spectral import VARIANTS, apply_spectral_norm, reshape_dim


def dense_sigma(layer: nn.Module, input_size) -> float:
    """Largest singular value of the layer's full matrix, built by applying the layer to basis vectors."""
    layer = layer.double()
    if getattr(layer, "bias", None) is not None:
        layer.bias = None
    shape = input_shape(layer, input_size)
    n = 1
    for s in shape:
        n *= s
    basis = torch.eye(n, dtype=torch.float64)
    with torch.no_grad():
        if isinstance(layer, nn.Embedding):
            columns = basis @ layer.weight  # row i of the matrix is the embedding of index i
        else:
            columns = layer(basis.view(n, *shape[1:])).reshape(n, -1)
    return float(torch.linalg.svdvals(columns)[0])


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
