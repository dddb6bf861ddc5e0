#!/usr/bin/env bash
# Run the benchmarks one after the other into one folder, each with its log.
#   bash bench/run_all.sh OUT_DIR [options passed to every script, e.g. --quick or --threads 1]
# SCRIPTS="bench_lif bench_tks_loss" picks a subset; PYTHON picks the interpreter.
# A failing script does not stop the others; the exit status is that of the last failure.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
    echo "usage: bash bench/run_all.sh OUT_DIR [--quick] [--threads N] [--note TEXT] ..." >&2
    exit 2
fi
out="$1"
shift
mkdir -p "$out"
export PYTHONPATH="$PWD:$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
status=0
for script in ${SCRIPTS:-bench_lif bench_tks_loss bench_kd_loss bench_train_step}; do
    start=$(date +%s)
    echo "== $script $*"
    "$PYTHON" "bench/$script.py" --out "$out" "$@" 2>&1 | tee "$out/$script.log"
    rc=${PIPESTATUS[0]}
    echo "== $script: exit $rc after $(( $(date +%s) - start )) s"
    [ "$rc" -ne 0 ] && status=$rc
done
exit $status
