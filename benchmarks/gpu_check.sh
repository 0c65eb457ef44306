#!/usr/bin/env bash
# One short accelerator run on the JAX backend (no TensorFlow): SCE vs exact full and
# chunked CE at N = 51,200, C = 10^6, d = 64 (benchmarks/gpu_check_jax.py says what
# is measured). Writes gpu_check_<device kind>.csv and .md, gpu_check.log and
# gpu_check_device.txt into $OUT when it is set (a device run), else benchmarks/results/.
#
#   bash benchmarks/gpu_check.sh fetch   # here, once: wheels into benchmarks/wheels/
#   bash benchmarks/gpu_check.sh [ARGS]  # there (carry benchmarks/wheels); ARGS go to
#                                        # gpu_check_jax.py, e.g. --methods sce,chunked_ce
#
# `fetch` downloads, for CPython 3.12 on x86-64 Linux, the versions of keras, optree
# and namex installed for $PYTHON (default: python): Keras and the two of its needs
# that the device machine lacks (it has numpy, absl-py, rich, h5py, ml-dtypes,
# packaging and JAX). The run installs them into /tmp/gpu_check_site when
# benchmarks/wheels/ (or $GPU_CHECK_WHEELS) holds any, and uses the keras_sce of this
# working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels="${GPU_CHECK_WHEELS:-benchmarks/wheels}"

if [ "${1:-}" = fetch ]; then
  py="${PYTHON:-python}"
  mkdir -p "$wheels"
  specs=$("$py" -c 'import importlib.metadata as m
print(" ".join(f"{n}=={m.version(n)}" for n in ("keras", "optree", "namex")))')
  "$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$wheels" $specs
  du -sh "$wheels"
  exit 0
fi

py="${PYTHON:-python3}"
dest="${OUT:-benchmarks/results}"
mkdir -p "$dest"
if compgen -G "$wheels/*.whl" > /dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/gpu_check_site "$wheels"/*.whl
  export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  "$py" -c 'import jax, keras; print("jax", jax.__version__, "keras", keras.__version__, jax.devices())'
} 2>&1 | tee "$dest/gpu_check_device.txt"
timeout 480 "$py" benchmarks/gpu_check_jax.py --out-dir "$dest" "$@" 2>&1 | tee "$dest/gpu_check.log"
