"""The health rules on recorded sigma sequences, and live in a run's train.log and TensorBoard."""

from __future__ import annotations

import pytest

from helpers import read_scalars, train_tiny
from sngan.diagnostics.health import GM_LIMIT, SIGMA_LIMIT, Health, replay

# Per-layer sigmas read (log.every=1) from runs of the embedded default, seeds 0-2: the claimed
# sigma of each variant (sigma/matrix for naive and reshaped, sigma/operator for operator).
NAIVE_SEED0_STEP1 = {"conv1": 1.614, "conv2": 1.197, "conv3": 1.287, "conv4": 1.192, "conv5": 1.295, "fc": 1.0}
NAIVE_SEED1 = [  # the naive run with the smallest excess: no single layer above 1.4
    {"conv1": 1.392, "conv2": 1.188, "conv3": 1.318, "conv4": 1.216, "conv5": 1.321, "fc": 1.0},
    {"conv1": 1.392, "conv2": 1.188, "conv3": 1.314, "conv4": 1.268, "conv5": 1.322, "fc": 1.0},
    {"conv1": 1.399, "conv2": 1.178, "conv3": 1.314, "conv4": 1.314, "conv5": 1.321, "fc": 1.0}]
RESHAPED_SEED1 = [  # one power step per update lags the weights: conv5 reads 1.357 at step 1
    {"conv1": 1.0, "conv2": 1.097, "conv3": 1.133, "conv4": 1.236, "conv5": 1.357, "fc": 1.0},
    {"conv1": 1.0, "conv2": 1.04, "conv3": 1.056, "conv4": 1.088, "conv5": 1.043, "fc": 1.0},
    {"conv1": 1.028, "conv2": 1.077, "conv3": 1.128, "conv4": 1.133, "conv5": 1.229, "fc": 1.0}]
OPERATOR_SEED0 = [  # steps 1, 2 and 30-32: single readings up to 1.48, never twice in a row
    {"conv1": 1.005, "conv2": 1.096, "conv3": 1.202, "conv4": 1.478, "conv5": 1.43, "fc": 1.0},
    {"conv1": 1.014, "conv2": 1.185, "conv3": 1.249, "conv4": 1.006, "conv5": 1.046, "fc": 1.0},
    {"conv1": 1.021, "conv2": 1.029, "conv3": 1.132, "conv4": 1.186, "conv5": 1.081, "fc": 1.0},
    {"conv1": 1.045, "conv2": 1.047, "conv3": 1.461, "conv4": 1.006, "conv5": 1.049, "fc": 1.0},
    {"conv1": 1.042, "conv2": 1.082, "conv3": 1.009, "conv4": 1.108, "conv5": 1.223, "fc": 1.0}]


def _readings(variant: str, layers: list[dict], start: int = 1) -> list[tuple[int, dict]]:
    prefix = "sigma/operator/" if variant == "operator" else "sigma/matrix/"
    return [(start + i, {prefix + k: v for k, v in reading.items()}) for i, reading in enumerate(layers)]


def _run(health: Health, readings) -> list[tuple[int, dict, list[str]]]:
    out = []
    for step, values in readings:
        scalars, warnings = health.check(step, values)
        out.append((step, scalars, warnings))
    return out


@pytest.mark.parametrize("sequence", [[NAIVE_SEED0_STEP1], NAIVE_SEED1], ids=["seed0", "seed1"])
def test_naive_warns_at_its_first_reading(sequence):
    health = Health("naive")
    (step, scalars, warnings), *rest = _run(health, _readings("naive", sequence))
    assert scalars["health/normalization_violated"] == 1.0
    assert scalars["health/claimed_sigma_geo_mean"] > GM_LIMIT
    warned = {line.split("'s")[0].split()[-1] for line in warnings}
    assert warned == {name for name, s in sequence[0].items() if s > GM_LIMIT}  # one line per offending layer
    assert health.first_violation == 1
    for _, scalars, later in rest:  # no log spam: the same layers at about the same sigma
        assert scalars["health/normalization_violated"] == 1.0 and later == []


@pytest.mark.parametrize("variant,sequence", [("reshaped", RESHAPED_SEED1), ("builtin", RESHAPED_SEED1),
                                              ("operator", OPERATOR_SEED0)])
def test_the_lag_of_a_correct_variant_never_warns(variant, sequence):
    health = Health(variant)
    for _, scalars, warnings in _run(health, _readings(variant, sequence)):
        assert warnings == [] and scalars["health/normalization_violated"] == 0.0
    assert health.first_violation is None and "normalization held" in health.summary()


def test_a_layer_warns_again_only_when_clearly_worse():
    health = Health("naive")
    layers = lambda conv1: {"conv1": conv1, "conv2": 1.3, "fc": 1.0}
    steps = _run(health, _readings("naive", [layers(1.6), layers(1.7), layers(1.95), layers(2.05), layers(1.5)]))
    lines = [(step, line) for step, _, warnings in steps for line in warnings]
    assert [(step, line.split("'s")[0].split()[-1]) for step, line in lines] == [(1, "conv1"), (1, "conv2"), (4, "conv1")]
    assert "was 1.60 at its last warning" in lines[-1][1] and health.worsenings == [4]


def test_one_layer_above_the_limit_twice_in_a_row_warns():
    health = Health("reshaped")  # the geometric mean stays low: one broken layer among many good ones
    good = {f"conv{i}": 1.0 for i in range(1, 9)}
    steps = _run(health, _readings("reshaped", [{**good, "conv3": SIGMA_LIMIT + 0.1}] * 2))
    assert steps[0][2] == [] and steps[0][1]["health/normalization_violated"] == 0.0
    assert len(steps[1][2]) == 1 and "conv3" in steps[1][2][0] and health.first_violation == 2


def test_none_has_nothing_to_violate():
    health = Health("none")
    scalars, warnings = health.check(1, {"sigma/matrix/conv1": 3.0, "sigma/operator/conv1": 6.0})
    assert warnings == [] and "health/normalization_violated" not in scalars


def test_operator_is_judged_by_its_operator_norm():
    health = Health("operator")  # its reshaped norms sit below 1: irrelevant to its promise
    _, warnings = health.check(1, {"sigma/matrix/conv1": 0.5, "sigma/operator/conv1": 1.9})
    assert len(warnings) == 1 and "operator norm is 1.90" in warnings[0]


def test_collapse_warns_once_per_episode_and_reports_recovery():
    health = Health("naive")
    clean = [0.0, 0.2, 0.46, 0.3, 0.1, 0.0, 0.05, 0.2, 0.0]
    lines = []
    for step, value in enumerate(clean, start=1):
        scalars, warnings = health.check(step * 100, {"metrics/clean_rate": value})
        lines += [(step * 100, line) for line in warnings]
    # best 0.46: 0.3 x best = 0.138, so 0.1 (step 500) collapses; 0.2 (step 800) recovers; 0 again
    assert [(s, line.split(":")[1].strip()) for s, line in lines] == [
        (500, "collapse suspected"), (800, "recovered from the collapse"), (900, "collapse suspected")]
    assert health.collapses == [500, 900] and "still collapsed" in health.summary()
    assert scalars["health/quality_vs_best"] == 0.0 and scalars["health/collapse_suspected"] == 1.0


def test_no_collapse_below_the_floor():
    health = Health("reshaped")  # never reached clean_rate 0.1: nothing to collapse from
    for step, value in enumerate([0.0, 0.09, 0.0, 0.05], start=1):
        _, warnings = health.check(step, {"metrics/clean_rate": value})
        assert warnings == []
    assert health.collapses == []


def test_fid_collapse_is_a_doubling_of_the_best():
    health = Health("reshaped")
    out = [health.check(step, {"metrics/fid": fid})[1] for step, fid in enumerate([80, 40, 70, 85], start=1)]
    assert out[:3] == [[], [], []] and len(out[3]) == 1 and "FID 85" in out[3][0]


def test_lipschitz_growth_warns_at_each_tenfold():
    health = Health("none")
    bounds = [10, 20, 60, 99, 120, 400, 900, 1300, 1100]
    lines = [line for step, b in enumerate(bounds, start=1)
             for line in health.check(step, {"sigma/lipschitz_bound": b, "lipschitz/grad_norm": 1.0})[1]]
    assert len(lines) == 2 and "12x" in lines[0] and "130x" in lines[1]
    assert "growing" in health.summary()
    bounded = Health("reshaped")
    for step, b in enumerate([10, 30, 50, 67, 50, 55], start=1):
        assert bounded.check(step, {"sigma/lipschitz_bound": b})[1] == []
    assert "bounded" in bounded.summary()


def test_state_survives_a_checkpoint():
    health = Health("naive")
    _run(health, _readings("naive", NAIVE_SEED1[:1]))
    health.check(2, {"metrics/clean_rate": 0.4})
    restored = Health("naive")
    restored.load_state_dict(health.state_dict())
    assert restored.summary() == health.summary()
    assert _run(restored, _readings("naive", NAIVE_SEED1[1:], start=3))[0][2] == []  # no repeated warning


def test_checkpointed_state_keeps_its_keys_and_loads_a_saved_one():
    health = Health("naive")  # the keys every checkpoint since the health checks holds, in this order
    assert list(health.state_dict()) == [
        "warned_sigma", "first_violation", "worsenings", "previous_sigma", "worst_sigma", "best_quality",
        "collapsed_at", "collapses", "lipschitz_min", "lipschitz_max", "lipschitz_warned", "grad_norm_min"]
    saved = {"warned_sigma": {"conv1": 1.61}, "first_violation": 1, "worsenings": [], "previous_sigma": {"conv1": 1.61},
             "worst_sigma": [1.61, "conv1", 1], "best_quality": [0.46, 300], "collapsed_at": 500, "collapses": [500],
             "lipschitz_min": 10.0, "lipschitz_max": 120.0, "lipschitz_warned": 12.0, "grad_norm_min": 1.0}
    health.load_state_dict(saved)  # tuples come back as lists from some checkpoint writers
    assert health.worst_sigma == (1.61, "conv1", 1) and health.best_quality == (0.46, 300)
    assert health.state_dict() == {**saved, "worst_sigma": (1.61, "conv1", 1), "best_quality": (0.46, 300)}
    assert health.summary() == ("health: normalization violated from step 1 in 1 layer(s), worst conv1 1.61 at step 1; "
                                "collapse suspected at step(s) 500 (still collapsed; best 0.46 at step 300); "
                                "Lipschitz bound growing (max 120, 12.0x its minimum)")
    older = Health("naive")
    older.load_state_dict({"best_quality": [0.2, 100], "a_key_from_elsewhere": 1})  # missing keys keep their defaults
    assert older.best_quality == (0.2, 100) and older.first_violation is None and older.collapses == []


def test_replay_runs_the_trainers_checks_over_logged_values():
    readings = {100: {"metrics/clean_rate": 0.4, "sigma/matrix/conv1": 1.6, "sigma/matrix/fc": 1.0, "loss/d": 1.0},
                200: {"metrics/clean_rate": 0.05, "sigma/matrix/conv1": 1.7, "sigma/matrix/fc": 1.0}}
    health = replay("naive", readings)
    by_hand = Health("naive")
    for step, values in readings.items():
        by_hand.check(step, {k: v for k, v in values.items() if k.startswith("sigma/")})
        by_hand.check(step, {k: v for k, v in values.items() if k.startswith("metrics/")})
    assert health.state_dict() == by_hand.state_dict()
    assert health.first_violation == 100 and health.collapses == [200] and health.best_quality == (0.4, 100)


@pytest.mark.parametrize("variant,warns", [("naive", True), ("reshaped", False), ("builtin", False),
                                           ("operator", False)])
def test_a_20_step_run_warns_only_for_naive(tmp_path, capsys, variant, warns):
    run = tmp_path / variant
    code, err, _ = train_tiny(run, [f"variant={variant}", "train.steps=20", "log.eval_every=1000",
                                    "log.sample_every=1000"], via="main", capsys=capsys)
    assert code == 0, err
    log = (run / "train.log").read_text()
    assert ("WARNING" in log and "normalization violated" in log) == warns, log
    assert "health: normalization " + ("violated" if warns else "held") in log
    flags = read_scalars(run)["health/normalization_violated"]
    assert [s for s, _ in flags] == [20] and flags[-1][1] == float(warns)


def test_the_signature_layout_puts_every_layer_on_one_chart(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    run = tmp_path / "run"
    code, err, _ = train_tiny(run, ["train.steps=2", "log.eval_every=1000", "log.sample_every=1000"], via="main",
                              capsys=capsys)
    assert code == 0, err
    acc = EventAccumulator(str(run))
    acc.Reload()
    proto = acc.Tensors("custom_scalars__config__")[0].tensor_proto
    layout = layout_pb2.Layout.FromString(proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    assert charts["sigma/matrix (all layers)"] == [r"sigma/matrix/.*"]
    assert charts["sigma/operator (all layers)"] == [r"sigma/operator/.*"]
