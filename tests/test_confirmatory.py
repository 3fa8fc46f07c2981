"""The confirmatory study's statistics against cases worked by hand (a log-rank test with censoring,
a Kaplan-Meier curve, Newcombe's published interval, an exact McNemar test), and its report
section: no test before every registered run is in, the registered sentence after."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("scipy")

from sngan.report.confirmatory import (CONFIRMATORY_SEEDS, SETTING, STEPS, Times, analyse, complete, kaplan_meier, logrank_greater,
                                       mcnemar_exact, median_time, newcombe, times_of)
from helpers import load_script, run_script
from sngan.report.verdict import confirmatory_section


def test_logrank_matches_a_hand_worked_example_with_censoring():
    # a: collapses at 100 and 300, censored at 200; b: collapses at 200, censored twice at 400.
    # Event times 100, 200, 300 (an event before a censoring at the same step: a's run censored at
    # 200 is still at risk there):
    #   100: at risk a 3, b 3; 1 event in a: E_a = 1/2,  V = 1 * 1/2 * 1/2 * 5/5 = 1/4
    #   200: at risk a 2, b 3; 1 event in b: E_a = 2/5,  V = 1 * 2/5 * 3/5 * 4/4 = 6/25
    #   300: at risk a 1, b 2; 1 event in a: E_a = 1/3,  V = 1 * 1/3 * 2/3 * 2/2 = 2/9
    # O_a - E_a = 2 - 37/30 = 23/30; Z = (23/30) / sqrt(1/4 + 6/25 + 2/9); p = 1 - Phi(Z).
    a = Times((100, 200, 300), (True, False, True))
    b = Times((200, 400, 400), (True, False, False))
    z = (23 / 30) / math.sqrt(1 / 4 + 6 / 25 + 2 / 9)
    statistic, p = logrank_greater(a, b)
    assert statistic == pytest.approx(z, rel=1e-12)
    assert p == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)), rel=1e-12)
    assert logrank_greater(b, a)[1] == pytest.approx(1 - p, rel=1e-12)  # the other direction


def test_kaplan_meier_and_median_by_hand():
    # Events at 100 and 300; censored at 200 and twice at 400: S = 4/5 after 100, 4/5 * 2/3 after 300.
    curve = kaplan_meier(Times((100, 200, 300, 400, 400), (True, False, True, False, False)))
    shares = {step: share for step, share, _, _ in curve}
    assert shares[100] == pytest.approx(0.8) and shares[300] == pytest.approx(0.8 * 2 / 3)
    assert all(low <= share <= high for _, share, low, high in curve)
    assert median_time(curve) is None  # never at or below 1/2
    assert median_time(kaplan_meier(Times((100, 200, 300), (True, True, False)))) == 200  # S: 2/3, 1/3
    assert kaplan_meier(Times((1500, 1500), (False, False))) == []


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, Table II, 56/70 against 48/80, method 10.
    d, low, high = newcombe(56, 70, 48, 80)
    assert d == pytest.approx(0.2)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


def test_mcnemar_exact_on_discordant_pairs():
    pairs = [(True, False)] * 5 + [(False, True)] + [(True, True)] * 3 + [(False, False)] * 7
    assert mcnemar_exact(pairs) == (5, 1, pytest.approx(7 / 64))  # P(X >= 5), X ~ Bin(6, 1/2)
    assert mcnemar_exact([(True, True), (False, False)]) == (0, 0, 1.0)


def _row(variant, seed, collapse_step=None, status="ok", last_step=1500, reason="", steps=STEPS):
    return {"variant": variant, "seed": seed, "collapsed": collapse_step is not None, "collapse_step": collapse_step,
            "status": status, "last_step": last_step, "reason": reason, "steps": steps, "optim": SETTING}


def test_times_censor_runs_that_never_collapsed_and_divergence_is_a_sensitivity_choice():
    rows = [_row("naive", 16, 700), _row("naive", 17), _row("naive", 18, status="diverged", last_step=900),
            _row("naive", 19, status="incomplete", last_step=300)]
    assert times_of(rows) == Times((700, 1500, 900), (True, False, False))
    assert times_of(rows, divergence_is_collapse=True) == Times((700, 1500, 900), (True, False, True))


def _study(naive_collapses: dict[int, int], reshaped_collapses: dict[int, int]) -> list[dict]:
    return ([_row("naive", s, naive_collapses.get(s)) for s in CONFIRMATORY_SEEDS]
            + [_row("reshaped", s, reshaped_collapses.get(s)) for s in CONFIRMATORY_SEEDS]
            + [_row("naive", s, 700 if s < 7 else None) for s in range(16)]
            + [_row("reshaped", s, 1400 if s < 3 else None) for s in range(16)])


def test_no_test_before_every_registered_run_is_in():
    rows = _study({16: 500}, {})
    partial = [r for r in rows if not (r["variant"] == "reshaped" and r["seed"] == 47)]
    assert not complete(partial)
    text = "\n".join(confirmatory_section(partial, []))
    assert "In progress: 63 of 64 runs finished" in text and "log-rank" in text.split("In progress")[0]
    assert "p = " not in text
    # A failed run is relaunched until it finishes: it does not open the gate, and the report lists it.
    failed = partial + [_row("reshaped", 47, status="failed", last_step=0, reason="machine lost")]
    assert not complete(failed)
    assert "reshaped seed 47: failed: machine lost" in "\n".join(confirmatory_section(failed, []))
    # Neither does a row of another length, nor a second row of one run.
    assert not complete(partial + [_row("reshaped", 47, steps=50, last_step=50)])
    twice = rows + [_row("naive", 16)]
    assert not complete(twice)
    assert "more than one row (not counted until one is removed): naive seed 16" in "\n".join(
        confirmatory_section(twice, []))
    # A run given up on, with its reason (a dated addendum says why), is accounted for and left out.
    abandoned = partial + [_row("reshaped", 47, status="abandoned", last_step=0, reason="data lost")]
    assert complete(abandoned)
    text = "\n".join(confirmatory_section(abandoned, []))
    assert "reshaped seed 47: abandoned: data lost" in text
    assert "study of 32 new seeds per variant" in text and "against 0 of 31 `reshaped` runs" in text


def test_the_registered_sentence_for_each_outcome():
    sooner = _study({s: 600 for s in range(16, 32)}, {s: 1400 for s in range(16, 20)})
    result = analyse(sooner)
    assert result["logrank"][1] < 0.05 and result["medians"] == {"naive": 600, "reshaped": None}  # S(600) = 1/2
    text = "\n".join(confirmatory_section(sooner, ["km.png"]))
    assert "**Yes. In a pre-registered study of 32 new seeds per variant" in text
    assert "16 of 32 `naive` runs had collapsed by step 1500 against 4 of 32 `reshaped` runs" in text
    assert "pooled across a look already taken" in text and "![time to first collapse](km.png)" in text

    same = _study({s: 900 for s in range(16, 22)}, {s: 900 for s in range(30, 36)})
    assert analyse(same)["logrank"][1] > 0.05
    text = "\n".join(confirmatory_section(same, []))
    assert "**The data do not show it." in text and "probability of 0.83" in text


def test_a_significant_result_says_which_way_the_rates_went():
    """Sooner is not more often: naive's runs that diverge early leave the risk set; the sentence
    says so when reshaped collapsed more often by the end."""
    rows = _study({s: 100 for s in range(16, 25)}, {s: 1500 for s in range(16, 26)})
    for r in rows:
        if r["variant"] == "naive" and 25 <= r["seed"] < 45:
            r.update(status="diverged", last_step=150)
    result = analyse(rows)
    assert result["logrank"][1] < 0.05 and result["difference"][0] < 0
    text = "\n".join(confirmatory_section(rows, []))
    assert "**Yes." in text and "0.03 less often" in text and "`reshaped` collapsed more often than `naive`." in text


def test_p_values_near_alpha_keep_the_digit_that_decides():
    from sngan.report.verdict import _p

    assert (_p(0.0496), _p(0.0504), _p(0.05), _p(0.12), _p(0.00042)) == ("0.0496", "0.0504", "0.05", "0.12", "4.2e-04")


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # no collapse at all: the log-rank is nan
def test_the_sensitivity_rows_pairs_count_a_divergence_as_a_collapse():
    rows = _study({}, {})
    for r in rows:
        if r["variant"] == "naive" and r["seed"] < 26 and r["seed"] >= 16:
            r.update(status="diverged", last_step=1000)
    assert analyse(rows)["mcnemar"][:2] == (0, 0)
    assert analyse(rows, divergence_is_collapse=True)["mcnemar"][:2] == (10, 0)


def test_the_report_keeps_the_exploratory_tables_apart_and_plots_the_curves_once_complete(tmp_path):
    from sngan.report.document import KAPLAN_MEIER, write_report

    columns = {"steps": 1500, "best_clean_rate": 0.4, "final_clean_rate": 0.3, "final_modes_covered": 8,
               "max_sigma_matrix": 1.0, "max_lipschitz_bound": 50.0, "first_warning_step": None,
               "first_worsening_step": None, "run": ""}
    rows = [{**columns, **r} for r in _study({s: 600 for s in range(16, 32)}, {})]
    partial = rows[1:]  # naive seed 16 not in yet
    text = write_report(partial, [], tmp_path / "partial").read_text()
    assert "32 runs (seeds 0-15" in text and not (tmp_path / "partial" / KAPLAN_MEIER).exists()
    text = write_report(rows, [], tmp_path / "complete").read_text()
    assert (tmp_path / "complete" / KAPLAN_MEIER).is_file() and f"]({KAPLAN_MEIER})" in text
    assert "| naive | 16 (16) |" in text  # the exploratory table: seeds 0-15 alone


def test_the_independent_recomputation_matches_the_hand_worked_example():
    recompute = load_script("recompute_primary_p.py")
    z, p = recompute.logrank([(100, True), (200, False), (300, True)], [(200, True), (400, False), (400, False)])
    expected = (23 / 30) / math.sqrt(1 / 4 + 6 / 25 + 2 / 9)  # worked above
    assert z == pytest.approx(expected, rel=1e-12) and p == pytest.approx(0.5 * math.erfc(expected / math.sqrt(2)))
    assert all(math.isnan(v) for v in recompute.logrank([(1500, False)], [(1500, False)]))  # no collapse at all


def test_the_independent_recomputation_checks_the_reports_p(tmp_path):
    from sngan.report.csvs import RUN_COLUMNS, write_csv
    from sngan.report.document import write_report

    columns = {"steps": 1500, "best_clean_rate": 0.4, "final_clean_rate": 0.3, "final_modes_covered": 8,
               "max_sigma_matrix": 1.0, "max_lipschitz_bound": 50.0, "first_warning_step": None,
               "first_worsening_step": None, "run": ""}
    # Ties across variants, a divergence and a failed run: the cases where two codes could part.
    rows = [{**columns, **r} for r in _study({16: 600, 17: 600, 18: 900, 19: 1250, 20: 1500},
                                             {16: 900, 25: 1250})]
    for r in rows:
        if r["variant"] == "naive" and r["seed"] == 30:
            r.update(status="diverged", last_step=1100)
        if r["variant"] == "reshaped" and r["seed"] == 31:
            r.update(status="abandoned", last_step=0, reason="machine lost")
    write_csv(tmp_path / "runs.csv", rows, RUN_COLUMNS)
    write_report(rows, [], tmp_path)
    statistic, p = analyse(rows)["logrank"]
    agreed = run_script("recompute_primary_p.py", [tmp_path])
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr
    assert f"Z = {statistic:.6f}" in agreed.stdout and "they agree" in agreed.stdout and 0.001 < p < 0.5

    report = tmp_path / "report.md"
    report.write_text(report.read_text().replace(f"| {statistic:.3f} |", f"| {statistic + 0.01:.3f} |", 1))
    assert run_script("recompute_primary_p.py", [tmp_path]).returncode == 1

    for lacking in (rows[1:], rows + [rows[0]], [{**r, "status": "failed"} if r is rows[0] else r for r in rows]):
        write_csv(tmp_path / "runs.csv", lacking, RUN_COLUMNS)  # naive seed 16 missing, twice, failed
        missing = run_script("recompute_primary_p.py", [tmp_path])
        assert missing.returncode == 2 and "registered runs not accounted for (naive: 1)" in missing.stderr
