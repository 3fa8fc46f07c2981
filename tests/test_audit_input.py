"""`python -m sngan.audit` given input it cannot audit: one complete `error:` line each, no traceback."""

from __future__ import annotations

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
    torch.save({"model": D.state_dict(), "step": 3}, root / "training_checkpoint.pt")
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
    ([MIMICRY, "--state-dict", "{root}/training_checkpoint.pt"], "values are not all tensors (keys: model, step)"),
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
