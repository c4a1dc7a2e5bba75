#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels the device image lacks, pinned in wheels.txt, for
# CPython 3.12 on manylinux x86_64, and check them (check_wheels.py); and .fmnist/ (git-ignored)
# with Debian's Fashion-MNIST files, which the device image lacks. Run it here, where the
# package registries are; the device `run` then names ".whl" and ".fmnist" in `carry`.
#   bash benchmarks/gpu/fetch_wheels.sh            # into .whl/ and .fmnist/
#   bash benchmarks/gpu/fetch_wheels.sh DIR        # wheels into DIR
# FMNIST_SRC: where the idx .gz files are [/usr/share/datasets/fashion-mnist]; FMNIST: where they go [.fmnist].
# WHEEL_PYTHON=3.11 fetches the same pins for 3.11 (only to test the list with this machine's torch).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
fmnist_src=${FMNIST_SRC:-/usr/share/datasets/fashion-mnist}
fmnist=${FMNIST:-$repo/.fmnist}
mkdir -p "$fmnist"
# Kept gzipped (29 MiB; 53 MiB raw would not fit the 64 MiB carry beside the wheels); run_all.sh unpacks them.
cp "$fmnist_src"/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz "$fmnist"/ \
  && echo "copied $(ls "$fmnist" | wc -l) Fashion-MNIST files ($(du -sh "$fmnist" | cut -f1)) into $fmnist"
dest=${1:-$repo/.whl}
py=${PYTHON:-$repo/.venv/bin/python}
version=${WHEEL_PYTHON:-3.12}
mapfile -t pins < <(grep -Eo '^[A-Za-z0-9_.-]+==[^ #]+' "$repo/benchmarks/gpu/wheels.txt")
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
mkdir -p "$dest"
rm -f "$dest"/*.whl
echo "fetching ${#pins[@]} wheels for CPython $version into $dest"
"$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
  "${platforms[@]}" -d "$dest" "${pins[@]}" 2> >(grep -v '^WARNING: Location' >&2)
"$py" "$repo/benchmarks/gpu/check_wheels.py" "$dest" --python "$version" --compare-local
