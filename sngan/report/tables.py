"""The markdown of report.md: per-variant table, pairwise tests, early warning, and the sentence
on whether a warning goes with a higher collapse rate. Numbers to 3 significant digits, p values
to 2; `-` where there is nothing to show."""

from __future__ import annotations

import statistics

from sngan.report.stats import (column, early_warning, finished, median_iqr, pairwise, warning_and_collapse,
                                wilson)

PAIRS = [("naive", "reshaped"), ("reshaped", "operator"), ("none", "naive")]
SIGNALS = (("first_warning_step", "first warning"), ("first_worsening_step", "a layer x1.25 worse"))


def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _miqr(values: list[float]) -> str:
    m = median_iqr(values)
    return "-" if m is None else f"{m[0]:.3g} [{m[1]:.3g}, {m[2]:.3g}]"


def _variant_row(variant: str, group: list[dict]) -> str:
    done = finished(group)
    counts = [sum(r["status"] == s for r in group) for s in ("failed", "diverged", "incomplete")]
    ok = sum(r["status"] == "ok" for r in group)
    k = sum(r["collapsed"] for r in done)
    rate = "-"
    if done:
        low, high = wilson(k, len(done))
        rate = f"{k / len(done):.2f} [{low:.2f}, {high:.2f}]"
    warned = sum(r["first_warning_step"] is not None for r in done)
    med = lambda key: _f(statistics.median(column(done, key))) if column(done, key) else "-"
    return (f"| {variant} | {len(group)} ({ok}) | {' / '.join(map(str, counts))} | {k} / {len(done)} | "
            f"{rate} | {_miqr(column(done, 'final_clean_rate'))} | "
            f"{_miqr(column(done, 'final_modes_covered'))} | {med('best_clean_rate')} | "
            f"{warned} / {len(done)} | {med('max_sigma_matrix')} | {med('max_lipschitz_bound')} |")


def variant_table(groups: dict) -> list[str]:
    lines = ["| variant | runs (ok) | failed / diverged / incomplete | collapsed | collapse rate [95% CI] | "
             "final clean_rate, median [IQR] | final modes covered, median [IQR] | best clean_rate, median | "
             "warned (normalization) | max sigma/matrix, median | max Lipschitz bound, median |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    return lines + [_variant_row(variant, group) for variant, group in groups.items()]


def tests_table(groups: dict) -> list[str]:
    lines = ["| comparison | collapsed | Fisher exact p (collapse) | Mann-Whitney p (final clean_rate) | "
             "Mann-Whitney p (final modes) |", "| --- | --- | ---: | ---: | ---: |"]
    for a, b in PAIRS:
        t = pairwise(groups, a, b)
        if t is None:
            lines.append(f"| {a} vs {b} | not enough runs | - | - | - |")
            continue
        lines.append(f"| {a} vs {b} | {t['collapse_a']}/{t['n_a']} vs {t['collapse_b']}/{t['n_b']} | "
                     f"{_f(t['fisher_p'], 2)} | {_f(t['mwu_final_clean_rate'], 2)} | "
                     f"{_f(t['mwu_final_modes_covered'], 2)} |")
    return lines


def early_warning_table(groups: dict) -> list[str]:
    lines = ["| variant | signal | collapsed runs | signalled before collapsing | lead time (steps), median "
             "[range] | runs without collapse | of which signalled (false alarms) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for variant, group in groups.items():
        for signal, name in SIGNALS:
            e = early_warning(finished(group), signal)
            lead = (f"{statistics.median(e['leads']):.0f} [{min(e['leads'])}, {max(e['leads'])}]"
                    if e["leads"] else "-")
            lines.append(f"| {variant} | {name} | {e['collapsed']} | {e['warned_before']} | {lead} | {e['stable']} | "
                         f"{e['false_alarms']} |")
    return lines


def warned_vs_collapse(rows: list[dict]) -> str:
    """Across all finished runs: does a warning go with a higher collapse rate?"""
    t = warning_and_collapse(rows)
    if t is None:
        return "Every run warned, or none did: the warning cannot be compared with its absence."
    return (f"Runs that warned collapsed in {t['collapsed_warned']} of {t['warned']} cases, runs that did not in "
            f"{t['collapsed_quiet']} of {t['quiet']} (Fisher's exact test p = {t['fisher_p']:.2g}). Where the "
            "warning fires at a variant's first reading (its sigma signature), this compares variants rather "
            "than moments of a run: the lead times above say how early, not whether, the signature foretells "
            "a collapse.")


def problems(rows: list[dict]) -> list[str]:
    """One line per run that did not finish ok, with its reason."""
    return [f"- {r['variant']} seed {r['seed']}: {r['status']}" + (f": {r['reason']}" if r["reason"] else "")
            for r in rows if r["status"] != "ok"]
