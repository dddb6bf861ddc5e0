#!/usr/bin/env bash
# The GPU checks of this repository in phases that each fit a 10-minute command, for a lent GPU
# machine that has torch, triton and nvcc but no network (see bench/README.md, "GPU sessions").
#   bash bench/gpu_check.sh PHASE [OUT_DIR]
# Phases, in order (setup first; the build stays in the working tree for the later phases):
#   setup          pip-install the wheels in ./.whl (spikingjelly 2.0.0, pytest, tqdm, matplotlib and
#                  their dependencies, fetched beforehand: bench/README.md, "GPU sessions") into
#                  /tmp/site, and build both extensions in place for this GPU's architecture
#   tests-kernels  tests/test_lif.py, test_lif_cpp.py, test_lif_cuda.py, test_tks_loss.py, test_kd_loss.py
#   tests-models   the module, replacement, model, training and evaluation tests
#   bench-loss     bench_tks_loss.py, bench_kd_loss.py and bench_train_step.py into OUT_DIR
#   bench-lif      bench_lif.py --neuron lif (binary spikes) into OUT_DIR
#   bench-ilif     bench_lif.py --neuron ilif (integer spike counts, against spikingjelly's ILIF) into OUT_DIR
#   tests-counts   only the integer-count, memory-format and double-backward LIF tests (a short check)
#   save           the save="x" recompute on CUDA: tests/test_lif_save.py, then bench_lif.py --neuron lif
#                  with cuda, cuda-x and spikingjelly at T in {4, 8, 16}, N=2^24, fp32 and bf16 into
#                  OUT_DIR/save (the issue-16 targets; a few minutes)
# Test phases write junit XML and the pytest log to OUT_DIR (default: $OUT, else ./gpu-check).
set -uo pipefail
cd "$(dirname "$0")/.."
phase="${1:-}"
out="${2:-${OUT:-gpu-check}}"
mkdir -p "$out"
export PYTHONPATH="/tmp/site:$PWD:$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"

run_tests() {
    local name="$1"
    shift
    "$PYTHON" -m pytest -q -rfE -p no:cacheprovider --junitxml="$out/$name.xml" "$@" 2>&1 | tee "$out/$name.log"
    return "${PIPESTATUS[0]}"
}

case "$phase" in
    setup)
        pip_target=("$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
                    --target /tmp/site)
        "${pip_target[@]}" .whl/*-none-any.whl || exit $?
        # compiled wheels are for one Python: one that does not fit this machine is left out (with
        # the machine's own package, if it has one)
        for wheel in .whl/*-cp*.whl; do
            [ -e "$wheel" ] || continue
            "${pip_target[@]}" "$wheel" 2>/dev/null || echo "left out $wheel (not for this Python)"
        done
        nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv | tee "$out/gpu.txt"
        arch="$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
        CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" TKS_FORCE_CUDA_BUILD=1 TKS_CUDA_ARCHS="$arch" \
            MAX_JOBS="${MAX_JOBS:-16}" "$PYTHON" setup.py build_ext --inplace 2>&1 | tail -5 | tee "$out/build.log"
        "$PYTHON" -m tks_kernels._ext 2>&1 | tee -a "$out/build.log"
        ;;
    tests-kernels)
        run_tests tests-kernels tests/test_lif.py tests/test_lif_cpp.py tests/test_lif_cuda.py tests/test_lif_save.py \
            tests/test_tks_loss.py tests/test_kd_loss.py
        ;;
    tests-models)
        # test_data.py needs tonic and test_bench.py the bench's CPU smoke runs: not GPU checks
        run_tests tests-models tests/test_neuron.py tests/test_replace.py tests/test_loss_modules.py \
            tests/test_models.py tests/test_train.py tests/test_eval.py tests/test_bearing_models.py \
            tests/test_energy.py tests/test_bearing_eval.py
        ;;
    bench-loss)
        SCRIPTS="bench_tks_loss bench_kd_loss bench_train_step" bash bench/run_all.sh "$out" --note "${NOTE:-gpu_check.sh}"
        ;;
    bench-lif)
        SCRIPTS="bench_lif" bash bench/run_all.sh "$out" --neuron lif --note "${NOTE:-gpu_check.sh}"
        ;;
    bench-ilif)
        # bench_lif.py directly: run_all.sh would write the same bench_lif.log as bench-lif
        "$PYTHON" bench/bench_lif.py --neuron ilif --out "$out" --note "${NOTE:-gpu_check.sh}" 2>&1 \
            | tee "$out/bench_ilif.log"
        exit "${PIPESTATUS[0]}"
        ;;
    tests-counts)
        run_tests tests-counts tests/test_lif.py tests/test_lif_cuda.py \
            -k "count or memory_format or double_backward or not_differentiable or in_place"
        ;;
    save)
        run_tests tests-save tests/test_lif_save.py
        tests_rc=$?
        "$PYTHON" bench/bench_lif.py --neuron lif --providers cuda,cuda-x,sj-cuda,sj-triton --T 4,8,16 --N 2^24 \
            --dtypes fp32,bf16 --compile-t "" --out "$out/save" --note "${NOTE:-gpu_check.sh save}" 2>&1 \
            | tee "$out/bench_lif_save.log"
        bench_rc=${PIPESTATUS[0]}
        [ "$tests_rc" -eq 0 ] && exit "$bench_rc"
        exit "$tests_rc"
        ;;
    *)
        echo "usage: bash bench/gpu_check.sh setup|tests-kernels|tests-models|bench-loss|bench-lif|bench-ilif|tests-counts|save [OUT_DIR]" >&2
        exit 2
        ;;
esac
