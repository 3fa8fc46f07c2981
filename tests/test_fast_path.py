"""The fast-path switches keep every variant correct: bf16 autocast (train.amp), channels_last,
torch.compile. Each is checked against the plain float32 eager computation from the same state."""

from __future__ import annotations

import copy

import pytest
import torch

from helpers import read_scalars, train_tiny
from sngan.models import build_discriminator
from sngan.diagnostics.monitor import layer_input_sizes, sigma_scalars
from sngan.spectral import apply_spectral_norm
from sngan.training.step import normalized_weights_once

NORMALIZED = ["naive", "reshaped", "builtin", "operator"]
CPU = torch.device("cpu")


def _discriminator(variant):
    torch.manual_seed(0)
    D = build_discriminator("cnn", resolution=16, d_ch=8)
    apply_spectral_norm(D, variant)
    sizes = layer_input_sizes(D, (3, 16, 16), CPU)
    return D, sizes


def _assert_same_state(a, b, **tol):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if tol:
            torch.testing.assert_close(sb[key].contiguous(), sa[key].contiguous(), **tol, msg=key)
        else:
            assert torch.equal(sb[key], sa[key]), key


@pytest.mark.parametrize("variant", NORMALIZED)
def test_under_autocast_sigma_is_still_computed_in_float32(variant):
    D, _ = _discriminator(variant)
    D_amp = copy.deepcopy(D)
    x = torch.randn(4, 3, 16, 16)
    for _ in range(2):  # two training-mode updates: the power iteration advances each time
        with normalized_weights_once(D, amp=False):
            ref = D(x)
        with normalized_weights_once(D_amp, amp=True), torch.autocast("cpu", dtype=torch.bfloat16):
            out = D_amp(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    # Power-iteration vectors, weights (and naive's in-place division): bit for bit the float32 ones.
    _assert_same_state(D, D_amp)


@pytest.mark.parametrize("variant", NORMALIZED)
def test_channels_last_gives_the_same_normalization(variant):
    D, sizes = _discriminator(variant)
    D_cl = copy.deepcopy(D).to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 16, 16)
    for _ in range(2):
        with normalized_weights_once(D, amp=False):
            ref = D(x)
        with normalized_weights_once(D_cl, amp=False):
            out = D_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    _assert_same_state(D, D_cl, rtol=1e-4, atol=1e-6)
    for key, value in sigma_scalars(D, sizes).items():
        assert sigma_scalars(D_cl, sizes)[key] == pytest.approx(value, rel=1e-4), key


@pytest.mark.parametrize("variant", NORMALIZED)
def test_compiled_discriminator_normalizes_like_the_eager_one(variant):
    D, _ = _discriminator(variant)
    D_c = copy.deepcopy(D)
    D_c.compile(backend="aot_eager")  # dynamo + AOTAutograd, as inductor sees them, without codegen
    x = torch.randn(4, 3, 16, 16)
    for _ in range(2):
        with normalized_weights_once(D, amp=False):
            ref = D(x)
            ref.sum().backward()
        with normalized_weights_once(D_c, amp=False):
            out = D_c(x)
            out.sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    _assert_same_state(D, D_c, rtol=1e-5, atol=1e-6)
    for p, p_c in zip(D.parameters(), D_c.parameters()):
        torch.testing.assert_close(p_c.grad, p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant,kind", [("reshaped", "matrix"), ("builtin", "matrix"), ("operator", "operator")])
def test_training_with_amp_and_channels_last_keeps_sigma_at_one(tmp_path, variant, kind):
    """The quantity each correct variant normalizes stays at 1 under bf16 forwards (the naive recipe
    promises nothing it keeps)."""
    final = train_tiny(tmp_path, [f"variant={variant}", "train.amp=true", "train.channels_last=true",
                                  "train.steps=6", "log.every=6", "ckpt.every=6", "optim=C"])
    assert all(torch.isfinite(torch.tensor(v)) for v in final.values())
    scalars = read_scalars(tmp_path)
    layers = [t for t in scalars if t.startswith("sigma/matrix/")]
    assert layers
    for tag in layers:
        tag = tag.replace("matrix", kind)
        assert scalars[tag][-1][1] == pytest.approx(1.0, abs=0.05), tag
