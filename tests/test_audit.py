"""`python -m sngan.audit` on discriminators written the way other codebases write them."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from helpers import QUIET, dense_sigma, train_tiny

THIRD_PARTY = '''
import torch
from torch import nn
from torch.nn.utils import spectral_norm
from torch.nn.utils.parametrizations import spectral_norm as sn_param


class LegacyD(nn.Module):
    """The legacy hook, as in most SNGAN repositories (and a plain Linear head with a fixed input)."""
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(spectral_norm(nn.Conv2d(3, 16, 3, padding=1)), nn.LeakyReLU(0.1),
                                  spectral_norm(nn.Conv2d(16, 32, 4, stride=2, padding=1)), nn.LeakyReLU(0.1))
        self.head = spectral_norm(nn.Linear(32 * 8 * 8, 1))
        for _ in range(50):  # converge the power iteration, as training would
            self(torch.randn(4, 3, 16, 16))

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


class ParamD(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = sn_param(nn.Conv2d(3, 8, 3, padding=1))
        self.conv2 = sn_param(nn.Conv2d(8, 8, 3, padding=1))
        self.fc = nn.Linear(8, 1)
        for _ in range(50):
            self(torch.randn(4, 3, 16, 16))

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3)))


class BlogNaive(nn.Module):
    """The hand-rolled recipe of a popular blog post: a fixed random u, weight.data divided in place."""
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.u = torch.randn(1, 8)
        self.conv.register_forward_pre_hook(self.normalize)

    def normalize(self, module, args):
        w = module.weight.data.view(8, -1)
        v = torch.nn.functional.normalize(self.u @ w, dim=1)
        u = torch.nn.functional.normalize(v @ w.t(), dim=1)
        module.weight.data /= (u @ w @ v.t()).item()

    def forward(self, x):
        return self.conv(x).mean((1, 2, 3))


class NeedsWidth(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)


def settings():
    return {"width": 8}
'''


def _audit(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sngan.audit", *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def third_party(tmp_path):
    (tmp_path / "third_party_d.py").write_text(THIRD_PARTY)
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("third_party_d", None)


def _dense(layer, size):
    import copy

    plain = copy.deepcopy(layer)
    for hook_id in list(plain._forward_pre_hooks):
        del plain._forward_pre_hooks[hook_id]
    weight = layer.weight.detach().clone()
    if hasattr(plain, "parametrizations"):
        from torch.nn.utils import parametrize
        parametrize.remove_parametrizations(plain, "weight", leave_parametrized=False)
    if "weight_orig" in plain._parameters:
        del plain._parameters["weight_orig"]
    plain.weight = torch.nn.Parameter(weight)
    return dense_sigma(plain, size)


@pytest.mark.parametrize("name,normalization", [("LegacyD", "torch spectral_norm (legacy hook)"),
                                                ("ParamD", "torch spectral_norm (parametrization)"),
                                                ("BlogNaive", "unknown (forward pre-hook method)")])
def test_audit_of_a_model_written_elsewhere(third_party, name, normalization):
    proc = _audit([f"third_party_d:{name}", "--input-shape", "3,16,16", "--json"], third_party)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    import third_party_d

    model = getattr(third_party_d, name)()
    layers = dict(model.named_modules())
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 16, 16))  # the weights as the audit's forward left them
    convs = [r for r in result["layers"] if r["type"] == "Conv2d"]
    assert convs and all(r["normalization"] == normalization for r in convs)
    product = 1.0
    for r in result["layers"]:
        exact = _dense(layers[r["layer"]], tuple(r["input"]) if r["input"] else None)
        assert r["operator_lower"] <= exact * (1 + 1e-5) and exact <= r["operator_upper"] * (1 + 1e-5), r
        product *= r["operator_upper"]
    assert result["lipschitz_bound_upper"] == pytest.approx(product)
    # What the forward did, measured against the weight as stored before it: the blog recipe's
    # in-place division is seen even though the weight it hands the conv is the parameter itself.
    behaviour = {"LegacyD": "reshaped-kernel SN", "ParamD": "reshaped-kernel SN", "BlogNaive": "divided by something else"}
    assert all(r["behaviour"] == behaviour[name] for r in convs)
    if name != "BlogNaive":  # reshaped-kernel SN holds sigma/matrix at 1, yet the 3x3 conv is far above
        first = convs[0]
        assert first["sigma_matrix"] == pytest.approx(1.0, abs=0.05) and first["operator_lower"] > 1.2
        assert any(w.startswith(first["layer"] + ":") for w in result["warnings"])
    # The whole D's interval holds every input gradient of D's forward from the audited state.
    whole, fresh = result["whole_network"], getattr(third_party_d, name)().eval()
    state = {k: v.clone() for k, v in fresh.state_dict().items()}
    for seed in range(4):
        fresh.load_state_dict(state)
        x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed), requires_grad=True)
        (grad,) = torch.autograd.grad(fresh(x).sum(), x)
        assert float(grad.norm()) <= whole["upper"] * (1 + 1e-5)
    assert 0 < whole["lower"] <= whole["upper"]
    if name == "BlogNaive":  # the conv's bound on the weight it received (divided in place), then the mean
        assert whole["upper"] == pytest.approx(convs[0]["operator_upper"] / math.sqrt(8 * 16 * 16), rel=1e-8)


def test_audit_of_a_whole_saved_module_and_of_an_sngan_run(third_party, tmp_path):
    import third_party_d

    torch.save(third_party_d.LegacyD(), tmp_path / "model.pt")  # torch pickles no parametrized module
    proc = _audit([tmp_path / "model.pt", "--input-shape", "3,16,16"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| body.0 | Conv2d | 16x16 | torch spectral_norm (legacy hook) |" in proc.stdout
    assert "Product of the upper bounds" in proc.stdout and "WARNING: body.0:" in proc.stdout

    run = tmp_path / "run"
    train_tiny(run, ["train.steps=2", *QUIET, "variant=operator"])
    proc = _audit([run, "--json"], tmp_path)  # the run's own input shape
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["input_shape"] == [3, 16, 16] and result["warnings"] == []
    assert {r["normalization"] for r in result["layers"]} == {"sngan operator", "sngan reshaped"}  # fc: reshaped


def test_the_naive_recipe_is_flagged_where_a_dense_svd_puts_a_layer_far_above_1():
    """The naive recipe divides in place, in training mode: the audit sees a plain weight, and warns
    on the layers whose operator norm (here from each layer's dense matrix) its division left above 1.2."""
    from sngan.audit import FAR_ABOVE, audit
    from sngan.models import build_discriminator
    from sngan.spectral import apply_spectral_norm

    torch.manual_seed(0)
    D = build_discriminator("cnn", resolution=16, d_ch=8)
    apply_spectral_norm(D, "naive")
    for _ in range(3):  # training-mode forwards: the recipe's divisions
        D(torch.randn(4, 3, 16, 16))
    result = audit(D.eval(), (3, 16, 16))
    modules = dict(D.named_modules())
    far = set()
    for row in result["layers"]:
        layer = modules[row["layer"]]
        shape = (layer.in_channels, *row["input"]) if isinstance(layer, torch.nn.Conv2d) else (layer.in_features,)
        with torch.no_grad():
            basis = torch.eye(int(torch.tensor(shape).prod()), dtype=torch.float64).view(-1, *shape)
            dense = (layer.double()(basis) - layer.double()(torch.zeros(1, *shape, dtype=torch.float64))).flatten(1)
        if torch.linalg.matrix_norm(dense, ord=2) > FAR_ABOVE:
            far.add(row["layer"])
    warned = {w.split(":")[0] for w in result["warnings"]}
    assert far and "fc" not in far and warned == far
    assert all("carries the naive recipe (an in-place division in training), yet its operator norm" in w
               for w in result["warnings"])


@pytest.mark.parametrize("args,message", [
    (["no_such_module:D", "--input-shape", "3,16,16"], "cannot import no_such_module:D"),
    (["third_party_d:Missing", "--input-shape", "3,16,16"], "cannot import third_party_d:Missing"),
    (["third_party_d:LegacyD", "--input-shape", "3,32,32"], "a forward of shape (1, 3, 32, 32) failed"),
    (["third_party_d:LegacyD"], "add --input-shape C,H,W"),
    (["third_party_d:LegacyD", "--input-shape", "3,x"], "expected positive integers"),
    (["third_party_d:NeedsWidth", "--input-shape", "3,16,16"],
     "third_party_d:NeedsWidth() cannot be called without arguments (missing a required argument: 'width'); give "
     "MODULE:NAME of a function that builds the discriminator"),
    (["third_party_d:settings", "--input-shape", "3,16,16"],
     "third_party_d:settings() returned a dict, not a torch.nn.Module; give MODULE:NAME of the discriminator's class"),
    (["no/such/model.pt", "--input-shape", "3,16,16"], "neither an existing file or folder nor an import path "
                                                     "MODULE:NAME; check the path, or give the class as MODULE:NAME"),
])
def test_bad_input_is_one_line(third_party, args, message, capsys):
    from sngan.audit import main

    with pytest.raises(SystemExit) as stop:
        main(args)
    err = capsys.readouterr().err  # argparse's own errors and the audit's refusals alike: one line, exit code 2
    assert stop.value.code == 2 and message in err and err.count("\n") == 1 and err.startswith("error: ")
