"""The seed study's report: a sweep of variants x seeds read into runs.csv and curves.csv, its
statistics with intervals, the tables of report.md and its plots. scripts/compare_variants.py
(the command line) makes it with:

    collect.py    run folders -> one row per run, one curve point per run and logged step
    csvs.py       runs.csv and curves.csv: columns, writing, reading back, merging an earlier report
    stats.py      grouping by variant, Wilson intervals, median/IQR, pairwise tests, early warning
    tables.py     the markdown tables and sentences of report.md
    plots.py      the plots (matplotlib, no display needed)
    document.py   report.md and its plots, from the rows and curves
"""
