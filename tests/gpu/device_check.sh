#!/usr/bin/env bash
# The GPU check of issues 30 and 31, in one command on the device machine (docs/measurement.md):
#   here, once:   bash tests/gpu/prepare.sh          (wheels and the bench set into .gpu/, ignored)
#   device tool:  run(command="bash tests/gpu/device_check.sh", carry=[".gpu"], timeout_s=600)
# It installs the carried wheels (s3prl 0.4.18, omegaconf, this package) into /tmp/site, runs the
# CUDA tests, then `daisy bench --random-base --device cuda --batch-sizes 1 8 32 --stock` for
# HuBERT fp32 and bf16, WavLM and wav2vec 2.0 fp32, CUDA graphs auto and off
# (tests/gpu/run_benches.py), stopping new runs so that all ends within about 9 minutes.
# Back in $OUT (at most 8 files): device.txt, cuda_tests.txt, benches.json, benches.txt, log.txt.
# A dry run of the plumbing here: PYTHON=/work/main/.venv/bin/python BENCH_ARGS="--device cpu --runs 1
# --max-clips 2 --batch-sizes 1 --repeats 1" bash tests/gpu/device_check.sh (CUDA tests skip).
set -u -o pipefail
OUT=${OUT:-/tmp/device_check_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
START=$(date +%s)
exec > >(tee "$OUT/log.txt") 2>&1

if [ ! -d .gpu/wheels ] || [ ! -f .gpu/bench_clips.npz ]; then
    echo "device_check: .gpu/wheels or .gpu/bench_clips.npz missing: run 'bash tests/gpu/prepare.sh' here and carry .gpu"
    exit 2
fi
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl \
    || { echo "device_check: installing the carried wheels failed"; exit 3; }
# the checkout first (its code is what is checked), the s3prl start-up stubs, then the wheels
export PYTHONPATH="$PWD:$PWD/tests/gpu/site:/tmp/site"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=8 MKL_NUM_THREADS=8

{
    nvidia-smi -L
    "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    "$PY" -c "import s3prl, daisy_upstream.core.expert; print('s3prl', s3prl.__version__, 'from', s3prl.__file__)"
    git log -1 --format='checkout %h %s' 2>/dev/null || echo "checkout: no git metadata"
} 2>&1 | tee "$OUT/device.txt"

# 1. the CUDA tests (about a minute); their failure is reported, the benches still run
timeout 180 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" tests/core/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.txt" | tail -n 25
echo "device_check: CUDA tests exit ${PIPESTATUS[0]} after $(( $(date +%s) - START )) s"

# 2. the benches, until about 9 minutes from the start
LEFT=$(( 540 - ($(date +%s) - START) ))
# shellcheck disable=SC2086  # BENCH_ARGS: words on purpose
timeout $(( LEFT + 30 )) "$PY" tests/gpu/run_benches.py --clips .gpu/bench_clips.npz --out "$OUT" --deadline "$LEFT" ${BENCH_ARGS:-}
echo "device_check: benches exit $? after $(( $(date +%s) - START )) s"
