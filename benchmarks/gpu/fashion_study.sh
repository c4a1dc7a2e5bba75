#!/usr/bin/env bash
# The Fashion-MNIST device command (issue 16): install the carried wheels, then run
# benchmarks/gpu/fashion_study.py, which saves its files to $OUT as it goes (at most 8).
# Before the device call, here: the wheels (bash benchmarks/gpu/fetch_wheels.sh) and the data,
#   mkdir -p .fmnist && cp /usr/share/datasets/fashion-mnist/*.gz .fmnist/    # 29.4 MiB, git-ignored
# then the device tool's run: command "bash benchmarks/gpu/fashion_study.sh", carry [".whl", ".fmnist"],
# timeout_s 560.
#   OUT=/tmp/fmnist-dry WHEELS= PYTHON=.venv/bin/python DRY_RUN=1 bash benchmarks/gpu/fashion_study.sh   # here, CPU
# WHEELS, SITE: see install_wheels.sh; BUDGET: seconds for fashion_study.py [480 on a GPU, 410 dry];
# extra arguments go to fashion_study.py.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
out=${OUT:?set OUT to the results folder}
py=${PYTHON:-python3}
budget=${BUDGET:-$([ -n "${DRY_RUN:-}" ] && echo 410 || echo 480)}
mkdir -p "$out"
. benchmarks/gpu/install_wheels.sh
timeout -k 10 $((${budget%.*} + 30)) "$py" benchmarks/gpu/fashion_study.py --out "$out" --budget "$budget" \
  ${wheels:+--wheels "$wheels"} ${DRY_RUN:+--cpu-dry-run} "$@"
