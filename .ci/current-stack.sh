#!/usr/bin/env bash
# The current stack, beside the pinned default one (.venv, make install): a user's environment
# with torch 2.11.0 + torchaudio 2.11.0 + espnet-s3prl (.ci/constraints-current.txt) in
# .venv-current, installed first as the user would; then this project with a plain
# 'pip install', which must leave all three as they were (checked below, pip's log in
# .venv-current/pip-install.log); then what the tests need (ESPnet without its dependencies,
# as make install does). Idempotent: a second run only reinstalls the project.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-current
PIP="$VENV/bin/python -m pip"
STACK=(torch torchaudio espnet-s3prl)

[ -x $VENV/bin/python ] || $PYTHON -m venv $VENV
$PIP install -q --upgrade pip
# the user's stack, exactly as the constraints file pairs it
$PIP install -q -r .ci/constraints-current.txt
versions() { $VENV/bin/python -c 'import sys; from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in sys.argv[1:]))' "${STACK[@]}"; }
before=$(versions)
# the project as a user installs it: no constraints, no --no-deps
$PIP install '.[tasks,test]' 2>&1 | tee $VENV/pip-install.log | grep -E '^(Successfully|ERROR)' || true
after=$(versions)
if [ "$before" != "$after" ]; then
  echo "pip install . changed the user's stack: $before -> $after" >&2
  exit 1
fi
echo "current stack unchanged by pip install .: $after"
# s3prl 0.4.18 beside it, in a folder of its own: tests/integration/test_compat.py puts it first
# on sys.path to check the shims that s3prl 0.4.18 needs on torchaudio >= 2.9
$PIP install -q --no-deps --upgrade --target $VENV/s3prl-0.4.18 s3prl==0.4.18
# ESPnet's S3prlFrontend (tests/integration/test_espnet.py), as in the Makefile
$PIP install -q --no-deps espnet==202511
$PIP install -q '.[espnet]'
rm -rf build
