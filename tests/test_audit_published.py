"""`sngan.audit` on discriminators as their authors published them (tests/published/, verbatim):
christiancosgrove's ResNet SNGAN and BigGAN's projection D. Each is trained a few steps with its
own loss and optimizer settings, saved the way its script saves it, audited by `python -m
sngan.audit` in another process, and every row checked against an independent record of the same
forward (F's calls captured by wrapping, each call's dense-SVD operator norm: audit_checks)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from audit_checks import captured_calls, check_layer_by_layer, same_weights, state_of

PUBLISHED = Path(__file__).resolve().parent / "published"
COSGROVE, BIGGAN = PUBLISHED / "christiancosgrove", PUBLISHED / "biggan"
# The factories a user writes to audit them: the published classes at a small width (the dense
# reference SVDs below grow with the cube of width x input size).
FACTORIES = {
    "cosgrove_resnet.py": "import model_resnet\nmodel_resnet.DISC_SIZE = 2\nDiscriminator = model_resnet.Discriminator\n",
    "biggan_cifar.py": "import BigGAN\n\ndef Discriminator():\n"
                       "    # launch_cifar_ema.sh's D settings, at width D_ch=1 (4 channels)\n"
                       "    return BigGAN.Discriminator(D_ch=1, resolution=32, n_classes=10, D_attn='0', D_init='N02')\n",
}

pytestmark = pytest.mark.slow  # dense SVDs of 2048-column conv matrices, and the audit's own


@contextmanager
def published(folder: Path, factories: Path):
    """The published modules importable here, as their scripts import them; gone afterwards."""
    before = set(sys.modules)
    sys.path[:0] = [str(folder), str(factories)]
    try:
        yield
    finally:
        sys.path.remove(str(folder))
        sys.path.remove(str(factories))
        for name in set(sys.modules) - before:
            del sys.modules[name]


def _factories(tmp_path: Path) -> Path:
    for name, text in FACTORIES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def _audit(args: list, folder: Path, cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(cwd)]), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore::FutureWarning"}
    proc = subprocess.run([sys.executable, "-m", "sngan.audit", *map(str, args), "--json"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _gradient_norms(D: torch.nn.Module, shape: tuple[int, ...], *label, points: int = 8) -> list[float]:
    """Norms of D's input gradient at random points, each forward from D's state now (a wrapper
    may advance u and v even in eval mode)."""
    state, norms = state_of(D), []
    D.eval()
    for i in range(points):
        x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(i), requires_grad=True)
        (grad,) = torch.autograd.grad(D(x, *label).sum(), x)
        norms.append(float(grad.norm()))
        D.load_state_dict(state)
    D.train()
    return norms


def test_christiancosgrove_resnet_saved_by_its_script(tmp_path):
    factories = _factories(tmp_path)
    with published(COSGROVE, factories), pytest.warns(FutureWarning):  # its nn.init.xavier_uniform
        cosgrove = importlib.import_module("cosgrove_resnet")
        torch.manual_seed(0)
        discriminator = cosgrove.Discriminator()
        # main.py's discriminator update (hinge loss, Adam 2e-4, betas (0, 0.9)) on stand-in batches
        optim_disc = torch.optim.Adam(filter(lambda p: p.requires_grad, discriminator.parameters()), lr=2e-4,
                                      betas=(0.0, 0.9))
        for _ in range(30):
            optim_disc.zero_grad()
            data, fake = torch.rand(8, 3, 32, 32) * 2 - 1, torch.randn(8, 3, 32, 32).tanh()
            disc_loss = (torch.nn.ReLU()(1.0 - discriminator(data)).mean()
                         + torch.nn.ReLU()(1.0 + discriminator(fake)).mean())
            disc_loss.backward()
            optim_disc.step()
        torch.save(discriminator.state_dict(), tmp_path / "disc_0")  # main.py, line 126

        result = _audit(["cosgrove_resnet:Discriminator", "--state-dict", tmp_path / "disc_0",
                         "--input-shape", "3,32,32"], COSGROVE, tmp_path)
        D = cosgrove.Discriminator()
        D.load_state_dict(torch.load(tmp_path / "disc_0"))
        before, x = state_of(D), torch.zeros(1, 3, 32, 32)
        calls = captured_calls(D, x)
        check_layer_by_layer(result, calls)
        same_weights(D, (x,), calls)
        assert all(torch.equal(v, state_of(D)[k]) for k, v in before.items())
        gradients = _gradient_norms(D, (3, 32, 32))

    rows = result["layers"]
    assert [r["call"] for r in rows] == ["conv2d"] * 10 + ["linear"]
    assert rows[0]["layer"] == "model.0.conv1" and rows[-1]["layer"] == "fc.module"
    for r in rows:  # its SpectralNorm divides weight_bar by the reshaped kernel's sigma, in its forward
        assert r["normalization"].startswith("in forward (SpectralNorm at ") and r["stored"].endswith("weight_bar")
        assert r["behaviour"] == "reshaped-kernel SN", r
    # What the project is about, on published code: normalized 3x3 convs whose operator norm on
    # 32x32 inputs is well above 1 (the 1x1 shortcuts and the fc are exactly 1).
    above = {r["layer"] for r in rows if r["operator_lower"] > 1.2}
    assert above == {r["layer"] for r, c in zip(rows, calls) if c["weight"].shape[2:] == (3, 3)} and len(above) == 8
    assert sorted(w.split(":")[0] for w in result["warnings"]) == sorted(above)
    # Residual sums make the product of per-layer bounds no bound; the whole D's interval is
    # composed through its graph, its convs (called by the wrapper, not as modules) bounded by their
    # recorded calls. Any gradient of D's output is at most its Lipschitz constant.
    whole = result["whole_network"]
    assert 0 < whole["lower"] <= whole["upper"] and max(gradients) <= whole["upper"]


def test_biggan_projection_discriminator_saved_by_its_script(tmp_path):
    factories = _factories(tmp_path)
    with published(BIGGAN, factories):
        biggan = importlib.import_module("biggan_cifar")
        torch.manual_seed(0)
        D = biggan.Discriminator()
        for _ in range(30):  # train_fns' D step: hinge loss (losses.loss_hinge_dis), D's own Adam
            D.optim.zero_grad()
            y = torch.randint(0, 10, (8,))
            dis_real, dis_fake = D(torch.rand(8, 3, 16, 16) * 2 - 1, y), D(torch.randn(8, 3, 16, 16).tanh(), y)
            (torch.relu(1.0 - dis_real).mean() + torch.relu(1.0 + dis_fake).mean()).backward()
            D.optim.step()
        torch.save(D.state_dict(), tmp_path / "D.pth")  # utils.save_weights

        result = _audit(["biggan_cifar:Discriminator", "--state-dict", tmp_path / "D.pth", "--input-shape",
                         "3,16,16", "--label", "7"], BIGGAN, tmp_path)
        D = biggan.Discriminator()
        D.load_state_dict(torch.load(tmp_path / "D.pth"))
        x, y = torch.zeros(1, 3, 16, 16), torch.tensor([7])
        before = state_of(D)
        calls = captured_calls(D, x, y)
        check_layer_by_layer(result, calls)
        same_weights(D, (x, y), calls)
        assert all(torch.equal(v, state_of(D)[k]) for k, v in before.items())
        gradients = _gradient_norms(D, (3, 16, 16), y)

    rows = result["layers"]
    assert [r["call"] for r in rows][-2:] == ["linear", "embedding"]
    for r in rows:  # layers.SN.W_(): weight / the power iteration's sigma, inside each layer's forward
        assert r["normalization"] == f"in forward ({r['type']} at {r['layer']})" and r["stored"].endswith("weight")
        assert r["behaviour"] == "reshaped-kernel SN", r
    embedding = rows[-1]
    assert embedding["layer"] == "embed" and embedding["indices"] == [7]
    assert embedding["label_norm"] == pytest.approx(float(calls[-1]["weight"][7].double().norm()), rel=1e-9)
    assert any(r["operator_lower"] > 1.2 for r, c in zip(rows, calls) if c["weight"].shape[2:] == (3, 3))
    # The projection head with the label fixed: the class embedding's row is a fixed factor.
    whole = result["whole_network"]
    assert 0 < whole["lower"] <= whole["upper"] and max(gradients) <= whole["upper"]
