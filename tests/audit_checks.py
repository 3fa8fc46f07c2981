"""Checks of an audit result against an independent record of the same forward: every
F.conv2d / F.linear / F.embedding / F.batch_norm call captured by wrapping torch.nn.functional
(not by the audit's own recording), each call's exact operator norm (a dense SVD of the layer's
full matrix), and the audit's row for it."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import dense_sigma
from sngan.diagnostics.forward_calls import record_forward

ARGS = {"conv2d": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
        "linear": ("input", "weight", "bias"), "embedding": ("input", "weight"),
        "batch_norm": ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")}


def captured_calls(model: nn.Module, *inputs) -> list[dict]:
    """Every F.conv2d / F.linear / F.embedding / F.batch_norm call of one eval forward of `model`:
    the op, the weight it received, its input shape and its other arguments. The model's state and
    train/eval flags are put back (some foreign layers advance their power iteration in eval mode)."""
    state, modes = state_of(model), [(m, m.training) for m in model.modules()]
    model.eval()
    calls = []

    def wrapping(op, fn):
        def recorded(*args, **kwargs):
            bound = {**dict(zip(ARGS[op], args)), **kwargs}
            calls.append({"op": op, "input_shape": tuple(bound["input"].shape),
                          **{k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in bound.items()
                             if k not in ("input", "bias")}})
            return fn(*args, **kwargs)
        return recorded

    with mock.patch.multiple(F, **{op: wrapping(op, getattr(F, op)) for op in ARGS}), torch.no_grad():
        model(*inputs)
    model.load_state_dict(state)
    for m, training in modes:
        m.training = training
    return calls


def exact_norm(call: dict) -> float:
    """The call's operator norm on its input: dense SVD for a conv, the matrix norm for a linear map,
    the largest row norm for a lookup (one-hot inputs), the largest gain for eval BatchNorm."""
    w = call["weight"].double()
    if call["op"] == "conv2d":
        groups = call.get("groups", 1)
        conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=call.get("stride", 1),
                         padding=call.get("padding", 0), dilation=call.get("dilation", 1), groups=groups,
                         bias=False).double()
        conv.weight = nn.Parameter(w)
        return dense_sigma(conv, call["input_shape"][2:])
    if call["op"] == "linear":
        return float(torch.linalg.svdvals(w)[0])
    if call["op"] == "embedding":
        return float(w.norm(dim=1).max())
    return float((w.abs() / (call["running_var"].double() + call["eps"]).sqrt()).max())


def check_layer_by_layer(result: dict, calls: list[dict]) -> None:
    assert [r["call"] for r in result["layers"]] == [c["op"] for c in calls]
    product = 1.0
    for row, call in zip(result["layers"], calls):
        exact = exact_norm(call)
        assert row["operator_lower"] <= exact * (1 + 1e-6) and exact <= row["operator_upper"] * (1 + 1e-6), row
        if call["op"] in ("conv2d", "linear"):
            assert row["input"] == (list(call["input_shape"][2:]) or None)
            matrix = float(torch.linalg.matrix_norm(call["weight"].double().flatten(1), ord=2))
            assert row["sigma_matrix"] == pytest.approx(matrix, rel=1e-9)
        product *= row["operator_upper"]
        # Warnings follow the measured behaviour: a normalized layer far above 1 is flagged.
        flagged = any(w.startswith(row["layer"] + ":") for w in result["warnings"])
        normalized = row["behaviour"] in ("reshaped-kernel SN", "divided by something else")
        assert flagged == (normalized and row["operator_lower"] > 1.2), row
    assert result["lipschitz_bound_upper"] == pytest.approx(product)


def same_weights(model: nn.Module, inputs: tuple, calls: list[dict]) -> None:
    """The audit's own recording received exactly the weights captured by wrapping F."""
    recorded = [c for c in record_forward(model, inputs).calls if c.on_input_path]
    assert len(recorded) == len(calls)
    for mine, theirs in zip(recorded, calls):
        assert torch.equal(mine.weight, theirs["weight"]), mine.op


def state_of(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}
