#!/usr/bin/env bash
# The one device command (benchmarks/README.md, "GPU"): install the carried wheels, then run
# benchmarks/gpu_all.py, which writes at most 8 files to $OUT as it goes.
#   bash benchmarks/gpu/run_all.sh                               # on the lent GPU machine
#   OUT=/tmp/dry WHEELS= PYTHON=.venv/bin/python DRY_RUN=1 bash benchmarks/gpu/run_all.sh   # here, on the CPU
# WHEELS: the wheel folder [.whl], empty to install nothing; SITE: where they go [/tmp/site];
# BUDGET: seconds for gpu_all.py [510 on a GPU, 275 dry: the headline plan's boxes plus 20]; FMNIST: the carried
# Fashion-MNIST .gz files [.fmnist], unpacked to $FMNIST_DATA/FashionMNIST/raw [/tmp/fmnist]; extra arguments go to
# gpu_all.py (e.g. --plan quick, which wants BUDGET=480).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
out=${OUT:?set OUT to the results folder}
py=${PYTHON:-python3}
wheels=${WHEELS-.whl}
site=${SITE:-/tmp/site}
budget=${BUDGET:-$([ -n "${DRY_RUN:-}" ] && echo 275 || echo 510)}
fmnist=${FMNIST:-.fmnist}
fmnist_data=${FMNIST_DATA:-/tmp/fmnist}
mkdir -p "$out"
fashion=()
if ls "$fmnist"/*.gz >/dev/null 2>&1; then
  # torchvision's layout, which the fashion-mnist reader takes from --data-dir before Debian's folder.
  mkdir -p "$fmnist_data/FashionMNIST/raw"
  for f in "$fmnist"/*.gz; do gunzip -c "$f" >"$fmnist_data/FashionMNIST/raw/$(basename "$f" .gz)"; done
  fashion=(--fashion-dir "$fmnist_data")
  echo "unpacked $(ls "$fmnist"/*.gz | wc -l) Fashion-MNIST files into $fmnist_data/FashionMNIST/raw" | tee -a "$out/run.log"
fi
if [ -n "$wheels" ]; then
  echo "installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into $site" | tee -a "$out/run.log"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl \
    >>"$out/run.log" 2>&1 || { tail -20 "$out/run.log"; echo "wheel install failed"; exit 3; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
timeout -k 10 $((budget + 30)) "$py" benchmarks/gpu_all.py --out "$out" --budget "$budget" \
  ${wheels:+--wheels "$wheels"} ${DRY_RUN:+--cpu-dry-run} "${fashion[@]}" "$@"
