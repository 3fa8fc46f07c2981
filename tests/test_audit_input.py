"""`python -m sngan.audit` given input it cannot audit: one complete `error:` line each, no traceback."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import foreign_discriminators as foreign
from helpers import call


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit_input")
    D = foreign.MimicryDiscriminator()
    torch.save(D, root / "whole.pt")
    torch.save(D.state_dict(), root / "fits.pt")
    with warnings.catch_warnings():  # torch.jit is deprecated: files of it are still around to be refused
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.trace(D.eval(), torch.zeros(1, 3, 8, 8)), root / "scripted.pt")
    (root / "notes.txt").write_text("conv1.weight: 0.1 0.2\n")
    torch.save([torch.zeros(3)], root / "a_list.pt")
    other_net = {"fc.weight": torch.zeros(4, 8)}
    # Training checkpoints as scripts save them: D's state dict under a key, beside others.
    torch.save({"net_G": other_net, "net_D": D.state_dict(), "optim_D": {"state": {}, "param_groups": []},
                "step": 3}, root / "training_checkpoint.pt")
    torch.save({"D": D.state_dict(), "D_ema": D.state_dict(), "step": 3}, root / "two_that_fit.pt")
    torch.save({"net_G": other_net, "step": 3}, root / "generator_only.pt")
    torch.save({"step": 3, "lr": 0.1}, root / "no_state.pt")
    other = dict(D.state_dict())
    other.pop("c1.weight"), other.pop("c2.weight")
    other["head.weight"] = torch.zeros(1)
    other["l3.weight"] = torch.zeros(2, 16)
    torch.save(other, root / "other_model.pt")
    return root


MIMICRY = "foreign_discriminators:MimicryDiscriminator"
CASES = [
    (["{root}/scripted.pt"], "is a TorchScript module: its forward runs compiled, where the audit cannot see"),
    ([MIMICRY, "--state-dict", "{root}/notes.txt"], "notes.txt is not a state dict"),
    ([MIMICRY, "--state-dict", "{root}/a_list.pt"], "a_list.pt holds a list, not a state dict"),
    ([MIMICRY, "--state-dict", "{root}/no_state.pt"], "values are not all tensors (keys: step, lr)"),
    ([MIMICRY, "--state-dict", "{root}/two_that_fit.pt"],
     "is a checkpoint with state dicts under 'D', 'D_ema' ('D', 'D_ema' all fit the model): name the "
     "discriminator's with --state-key KEY"),
    ([MIMICRY, "--state-dict", "{root}/generator_only.pt"],
     "is a checkpoint with state dicts under 'net_G' (none fits the model)"),
    ([MIMICRY, "--state-dict", "{root}/two_that_fit.pt", "--state-key", "D_emma"],
     "--state-key D_emma: {root}/two_that_fit.pt holds no state dict under 'D_emma'; its state dicts are under "
     "'D', 'D_ema'"),
    ([MIMICRY, "--state-key", "D"], "--state-key goes with --state-dict FILE (the checkpoint it picks from); add "
                                     "--state-dict FILE, or drop --state-key"),
    ([MIMICRY, "--state-dict", "{root}/whole.pt"], "a whole pickled module is audited by giving its file"),
    ([MIMICRY, "--state-dict", "{root}/other_model.pt"],
     "does not fit foreign_discriminators:MimicryDiscriminator: keys 2 missing (c1.weight, c2.weight); "
     "1 unexpected (head.weight); 1 of another shape (l3.weight (saved 2x16, model 1x16))"),
    ([MIMICRY, "--state-dict", "{root}/nowhere.pt"], "cannot read --state-dict"),
    (["{root}/whole.pt", "--state-dict", "{root}/fits.pt"], "--state-dict applies to MODULE:NAME only"),
    ([MIMICRY, "--label", "-1"], "expected a class index"),
]


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(a).replace("{root}/", "") for a, _ in CASES])
def test_bad_input_is_one_complete_line(files, capsys, args, message):
    code, err, out = call("audit", [a.format(root=files) for a in args] + ["--input-shape", "3,8,8"], capsys)
    assert code != 0 and "Traceback" not in err + out
    line = err.strip()
    assert line.startswith("error: ") and "\n" not in line, err
    assert message.format(root=files) in line, line


def test_a_state_dict_that_fits_is_loaded(files, capsys):
    code, err, out = call("audit", [MIMICRY, "--state-dict", str(files / "fits.pt"), "--input-shape", "3,8,8"],
                          capsys)
    assert code == 0, err
    assert "| c1 | SNConv2d | 8x8 | in forward (SNConv2d at c1) | c1.weight / " in out


@pytest.mark.parametrize("key", [None, "D_ema"])
def test_a_training_checkpoint_gives_the_discriminators_state_dict(tmp_path, capsys, key):
    trained = foreign.MimicryDiscriminator()
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(1.5).add_(0.01)  # not the weights a fresh MimicryDiscriminator() has
    sigma = trained.c1._power_iteration(trained.c1.weight.detach().flatten(1), trained.c1.u, 1)[0]
    if key is None:  # one state dict fits: it is found
        checkpoint = {"net_G": {"fc.weight": torch.zeros(4, 8)}, "net_D": trained.state_dict(), "step": 3}
    else:  # two fit: --state-key picks
        checkpoint = {"D": foreign.MimicryDiscriminator().state_dict(), "D_ema": trained.state_dict()}
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    code, err, out = call("audit", [MIMICRY, "--state-dict", str(tmp_path / "ckpt.pt"), "--input-shape", "3,8,8",
                                    "--json"] + (["--state-key", key] if key else []), capsys)
    assert code == 0, err
    assert ("the state dict under 'net_D' fits the model: auditing it" in err) if key is None else err == ""
    divisor = next(r for r in json.loads(out)["layers"] if r["layer"] == "c1")["divisor"]
    assert divisor == pytest.approx(float(sigma), rel=1e-5)
