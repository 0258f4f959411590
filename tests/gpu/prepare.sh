#!/usr/bin/env bash
# Here (not on the device): what tests/gpu/device_check.sh needs there, into .gpu/ (git-ignored):
#   .gpu/wheels/     s3prl 0.4.18, omegaconf (s3prl's data2vec imports it) and this package
#   .gpu/bench_clips.npz   the bench set (the device has neither sox nor pocketsphinx-testdata)
# Needs PyPI (pip wheel) and a Python with this package's requirements (default: the venv's).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PY=${PYTHON:-/work/main/.venv/bin/python}
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF '/.gpu/' "$EXCLUDE" 2>/dev/null || echo '/.gpu/' >> "$EXCLUDE"
rm -rf .gpu && mkdir -p .gpu/wheels
"$PY" -m pip wheel -q --no-deps -w .gpu/wheels "s3prl==0.4.18" "omegaconf==2.4.0"
"$PY" -m pip wheel -q --no-deps -w .gpu/wheels .
PYTHONPATH="$PWD" OMP_NUM_THREADS=1 "$PY" tests/gpu/make_clips.py .gpu/bench_clips.npz
ls -l .gpu/wheels
du -sh .gpu
