"""`sngan.audit` on discriminators written the way other SNGAN codebases write them
(tests/foreign_discriminators.py, tests/foreign_frobenius.py), checked layer by layer: every
row against the weight its call really received, captured here by wrapping torch.nn.functional's
functions (independently of the audit's own recording), and against that call's exact operator
norm (a dense SVD of the layer's full matrix)."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import foreign_discriminators as foreign
import foreign_frobenius
from audit_checks import captured_calls, check_layer_by_layer, same_weights, state_of
from helpers import dense_sigma
from sngan.audit import audit, report_text
from sngan.linalg.network import NoCertifiedBound, RecordedCall, network_upper_bound

TESTS = Path(__file__).resolve().parent
SHAPE = (3, 8, 8)


def test_a_wrapper_that_calls_its_inner_forward_directly():
    """christiancosgrove's SpectralNorm: weight_bar / sigma set as the inner module's weight, then
    `self.module.forward(x)`: no hook fires, yet every layer is found, named and measured."""
    D = foreign.CosgroveDiscriminator()
    before = state_of(D)
    x = torch.zeros(1, *SHAPE)
    calls = captured_calls(D, x)
    result = audit(D, SHAPE)
    assert [r["layer"] for r in result["layers"]] == ["conv1.module", "conv2.module", "conv3.module", "fc.module"]
    for r in result["layers"]:
        wrapper = r["layer"].split(".")[0]
        assert r["normalization"] == f"in forward (SpectralNorm at {wrapper})"
        assert r["stored"] == f"{wrapper}.module.weight_bar" and r["behaviour"] == "reshaped-kernel SN", r
        assert r["sigma_matrix"] == pytest.approx(1.0, abs=2e-3)
    check_layer_by_layer(result, calls)
    same_weights(D, (x,), calls)
    after = state_of(D)  # its forward advances u and v even in eval mode: the audit put them back
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_layer_that_divides_its_weight_inside_forward():
    """Mimicry's SNConv2d / SNLinear: F.conv2d(input=x, weight=self.weight / sigma, ...)."""
    D = foreign.MimicryDiscriminator()
    x = torch.zeros(1, *SHAPE)
    calls = captured_calls(D, x)
    result = audit(D, SHAPE)
    assert [r["layer"] for r in result["layers"]] == ["c1", "c2", "l3"]
    for r in result["layers"]:
        layer = getattr(D, r["layer"])
        with torch.no_grad():
            sigma = layer._power_iteration(layer.weight.view(layer.weight.shape[0], -1), layer.u, 1)[0]
        assert r["stored"] == f"{r['layer']}.weight" and r["divisor"] == pytest.approx(float(sigma), rel=1e-5)
        assert r["normalization"] == f"in forward ({type(layer).__name__} at {r['layer']})"
        assert r["behaviour"] == "reshaped-kernel SN"
    check_layer_by_layer(result, calls)
    same_weights(D, (x,), calls)


def _run(args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


SAVE = """
import sys, torch
import foreign_discriminators as foreign
D = foreign.LegacyHookDiscriminator()
print(list(D.main[0]._forward_pre_hooks))
torch.save(D, sys.argv[1])
"""


def test_legacy_hook_saved_whole_by_another_process(tmp_path):
    """A pickled module keeps its hooks' ids; in the audit's process the id counter restarts. The
    audit registers nothing, so the first layer keeps its legacy hook and its forward divides."""
    saved = _run(["-c", SAVE, tmp_path / "d.pt"], tmp_path)
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout.strip() == "[0]"  # the id a new hook in a fresh process would take
    proc = _run(["-m", "sngan.audit", tmp_path / "d.pt", "--input-shape", "3,8,8", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    first = result["layers"][0]
    assert first["layer"] == "main.0" and first["normalization"] == "torch spectral_norm (legacy hook)"
    assert first["behaviour"] == "reshaped-kernel SN" and first["stored"] == "main.0.weight_orig"
    D = torch.load(tmp_path / "d.pt", weights_only=False)
    conv = D.main[0]
    w, u, v = conv.weight_orig.detach(), conv.weight_u, conv.weight_v
    used = w / torch.dot(u, torch.mv(w.flatten(1), v))  # what the hook's eval-mode forward divides by
    plain = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
    plain.weight = nn.Parameter(used.clone())
    exact = dense_sigma(plain, (8, 8))
    assert first["operator_lower"] <= exact * (1 + 1e-6) and exact <= first["operator_upper"] * (1 + 1e-6)
    check_layer_by_layer(result, captured_calls(D, torch.zeros(1, *SHAPE)))


def test_a_hook_named_spectral_norm_that_normalizes_something_else():
    D = foreign_frobenius.FrobeniusDiscriminator()
    x = torch.zeros(1, *SHAPE)
    calls = captured_calls(D, x)
    result = audit(D, SHAPE)
    convs = result["layers"][:2]
    for r in convs:
        frobenius = float(getattr(D, r["layer"]).weight_orig.detach().norm())
        assert r["normalization"] == "unknown (forward pre-hook SpectralNorm)"
        assert r["behaviour"] == "divided by something else" and r["divisor"] == pytest.approx(frobenius, rel=1e-6)
    assert not any("reshaped kernel" in w for w in result["warnings"])
    check_layer_by_layer(result, calls)
    same_weights(D, (x,), calls)


def test_batch_norm_is_a_per_channel_gain():
    D = foreign.BatchNormDiscriminator()
    x = torch.zeros(1, *SHAPE)
    calls = captured_calls(D, x)
    result = audit(D, SHAPE)
    bn = D.main[3]
    gain = float((bn.weight.detach().double().abs() / (bn.running_var.double() + bn.eps).sqrt()).max())
    row = next(r for r in result["layers"] if r["call"] == "batch_norm")
    assert row["layer"] == "main.3" and row["type"] == "BatchNorm2d" and gain > 1
    assert row["operator_upper"] == pytest.approx(gain, rel=1e-8)
    check_layer_by_layer(result, calls)  # the product includes the gain
    same_weights(D, (x,), calls)


def test_projection_discriminator_with_a_label(tmp_path):
    proc = _run(["-m", "sngan.audit", "foreign_discriminators:ProjectionDiscriminator", "--input-shape", "3,8,8",
                 "--label", "3", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    D = foreign.ProjectionDiscriminator()
    calls = captured_calls(D, torch.zeros(1, *SHAPE), torch.tensor([3]))
    assert [r["layer"] for r in result["layers"]] == ["block1", "block2", "l6", "l_y"]
    embedding = result["layers"][3]
    assert embedding["call"] == "embedding" and embedding["indices"] == [3]
    assert embedding["normalization"] == "torch spectral_norm (legacy hook)"
    assert embedding["behaviour"] == "reshaped-kernel SN"
    assert embedding["label_norm"] == pytest.approx(float(calls[3]["weight"][3].double().norm()), rel=1e-9)
    check_layer_by_layer(result, calls)
    table = _run(["-m", "sngan.audit", "foreign_discriminators:ProjectionDiscriminator", "--input-shape", "3,8,8",
                  "--label", "3"], tmp_path)
    assert "| l_y | Embedding | index 3 | torch spectral_norm (legacy hook) |" in table.stdout


class _NeedsLabel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.embed = nn.Linear(3 * 8 * 8, 4), nn.Embedding(5, 4)

    def forward(self, x, y):
        return (self.fc(x.flatten(1)) * self.embed(y)).sum(1)


def test_label_errors():
    from sngan.run.errors import UserError

    with pytest.raises(UserError, match=r"needs a second argument: give --label N"):
        audit(_NeedsLabel(), SHAPE)
    with pytest.raises(UserError, match=r"--label 3 given, but MimicryDiscriminator.forward\(x\) takes no class label .*; drop --label"):
        audit(foreign.MimicryDiscriminator(), SHAPE, label=3)
    assert [r["call"] for r in audit(_NeedsLabel(), SHAPE, label=4)["layers"]] == ["linear", "embedding"]


def test_the_audit_leaves_every_hook_where_it_was():
    from torch.nn.modules import module as torch_module

    D = foreign.LegacyHookDiscriminator()
    hooks = {name: list(m._forward_pre_hooks.items()) + list(m._forward_hooks.items()) for name, m in D.named_modules()}
    global_hooks = (dict(torch_module._global_forward_pre_hooks), dict(torch_module._global_forward_hooks))
    modes = [m.training for m in D.modules()]
    audit(D, SHAPE)
    assert hooks == {name: list(m._forward_pre_hooks.items()) + list(m._forward_hooks.items())
                     for name, m in D.named_modules()}
    assert global_hooks == (dict(torch_module._global_forward_pre_hooks), dict(torch_module._global_forward_hooks))
    assert modes == [m.training for m in D.modules()]  # its train/eval flags as they were


class _FunctionalResidual(nn.Module):
    """A residual block whose convs are called functionally on weights divided inside forward
    (Mimicry's and BigGAN's way), a module shortcut, and a linear head: linear and bias-free, so
    its Lipschitz constant is the norm of its one-row matrix."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.w1, self.w2 = nn.Parameter(torch.randn(4, 3, 3, 3)), nn.Parameter(torch.randn(4, 4, 3, 3))
        self.shortcut = nn.Conv2d(3, 4, 1, bias=False)
        self.head = nn.Linear(4 * 5 * 5, 1, bias=False)

    def forward(self, x):
        h = F.conv2d(x, self.w1 / self.w1.flatten(1).norm(), padding=1)
        h = F.conv2d(h, self.w2 / 3.0, padding=1)
        return self.head((self.shortcut(x) + h).flatten(1))


def test_whole_d_interval_through_layers_called_functionally():
    D, shape = _FunctionalResidual(), (3, 5, 5)
    x = torch.zeros(1, *shape)
    calls = captured_calls(D, x)
    result = audit(D, shape)
    check_layer_by_layer(result, calls)  # each row's interval holds its call's dense-SVD norm
    conv1, conv2, shortcut, head = (r["operator_upper"] for r in result["layers"])
    D64 = _FunctionalResidual().double()
    D64.load_state_dict({k: v.double() for k, v in D.state_dict().items()})
    n = math.prod(shape)
    with torch.no_grad():  # the whole map's one row, from unit inputs
        exact = float(torch.linalg.matrix_norm(D64(torch.eye(n, dtype=torch.float64).view(n, *shape)), ord=2))
    whole = result["whole_network"]
    assert whole["lower"] <= exact <= whole["upper"]
    # a linear map: its gradient is its row, less the allowance for the float32 weights' rounding
    assert whole["lower"] == pytest.approx(exact, rel=1e-5)
    # The graph composed: the branches' bounds add (conv2 after conv1 multiplies), then the head.
    assert whole["upper"] == pytest.approx((shortcut + conv1 * conv2) * head, rel=1e-12)


def test_a_graph_that_is_not_the_recorded_forward_is_refused():
    D, shape = _FunctionalResidual(), (3, 5, 5)
    wrong = [RecordedCall("conv2d", (1, 3, 5, 5), (4, 3, 3, 3), 1.0),
             RecordedCall("conv2d", (1, 4, 5, 5), (4, 4, 3, 3), 1.0),
             RecordedCall("linear", (1, 100), (1, 100), 1.0)]  # the shortcut's call left out
    with pytest.raises(NoCertifiedBound, match=r"conv2d at shortcut is not the recorded forward's call 3 "
                                               r"\(linear on 1x100\): the traced graph is another forward"):
        network_upper_bound(D, shape, lambda name, layer, size: 1.0, wrong)


class _LinearProjection(nn.Module):
    """A projection head (the SNGAN paper's conditional D, BigGAN's): l(h) + <embed(y), h>, on
    sum-pooled conv features; linear in the image for a fixed label."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.l = nn.Linear(4, 1, bias=False)
        self.embed = nn.Embedding(5, 4)

    def forward(self, x, y):
        h = self.conv(x).sum(dim=(2, 3))
        return self.l(h) + (self.embed(y) * h).sum(1, keepdim=True)


def test_whole_d_interval_of_a_projection_discriminator_for_a_label():
    D, shape, label = _LinearProjection(), (3, 5, 5), 3
    result = audit(D, shape, label)
    conv, head = (r["operator_upper"] for r in result["layers"][:2])
    row = D.embed.weight[label].detach().double()
    n = math.prod(shape)
    D64 = copy.deepcopy(D).double()
    with torch.no_grad():  # the whole map's one row, from unit inputs
        exact = float(torch.linalg.matrix_norm(D64(torch.eye(n, dtype=torch.float64).view(n, *shape),
                                                   torch.full((n,), label)), ord=2))
    whole = result["whole_network"]
    assert whole["lower"] <= exact <= whole["upper"] and whole["lower"] == pytest.approx(exact, rel=1e-5)
    # Sum pooling over 5x5 (sqrt 25), then the head plus the product by the label's row (max |row|)
    # summed over 4 channels (sqrt 4): the embedding is a fixed factor, not a layer on the image.
    assert whole["upper"] == pytest.approx(conv * 5 * (head + float(row.abs().max()) * 2), rel=1e-8)
    assert "whole D: certified Lipschitz interval in the image, for label 3" in report_text(result)


class _CopiesItsInput(nn.Module):
    """A product by a fixed tensor that broadcasts the input (its entries copied twice): no
    diagonal map, so max |c| is no bound."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        self.register_buffer("c", torch.ones(2, 1, 1, 1, 1))

    def forward(self, x):
        return (self.c * self.conv(x)).sum(0).flatten(1).sum(1)


def test_a_product_that_copies_the_input_is_refused():
    whole = audit(_CopiesItsInput(), (3, 5, 5))["whole_network"]
    assert whole == {"error": "NoCertifiedBound: no certified bound: mul by a tensor or by the input at D (node mul)"}
