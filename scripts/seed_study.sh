#!/usr/bin/env bash
# The seed study of docs/results/seeds: the embedded default (experiment=embedded, 1500 steps) with
# 16 seeds of naive and reshaped and 8 of none, builtin and operator, fixed in advance. Parallel
# local jobs through Hydra's joblib launcher (one thread each); every job's folder is named by its
# overrides, so relaunching this script after a kill resumes unfinished runs (resume=auto) and
# skips finished ones. Then the report.
#   bash scripts/seed_study.sh [SWEEP_DIR] [extra Hydra overrides, e.g. hydra.launcher.n_jobs=8]
set -euo pipefail
if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0; fi
SWEEP=${1:-outputs/seeds}
shift || true
common=(-m hydra/launcher=joblib "hydra.sweep.dir=$SWEEP" resume=auto log.progress=false "$@")
python -m sngan.train "${common[@]}" 'seed=range(16)' variant=naive,reshaped
python -m sngan.train "${common[@]}" 'seed=range(8)' variant=none,builtin,operator
# Runs already in the committed report but no longer on disk (another machine, a fresh clone) stay in it.
keep=(); [[ -f docs/results/seeds/runs.csv ]] && keep=(--add-csv docs/results/seeds)
python scripts/compare_variants.py --collect "$SWEEP" "${keep[@]}" --out docs/results/seeds
