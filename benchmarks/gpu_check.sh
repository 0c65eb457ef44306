#!/usr/bin/env bash
# One short GPU run (a few minutes) of benchmarks/loss_scaling.py: N = 8,192 rows,
# C = 10^5, 10^6, 10^7, d = 64, all five methods, each configuration in a fresh
# process, GPU allocator peak memory. Writes loss_scaling_gpu_<card>.csv (+ .md, .png)
# into $OUT when it is set (a device run), else into benchmarks/results/.
#
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.
export TF_CPP_MIN_LOG_LEVEL=2
dest="${OUT:-benchmarks/results}"
mkdir -p "$dest"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$dest/gpu_check_device.txt"
python -c "import tensorflow as tf; g = tf.config.list_physical_devices('GPU'); \
print('TF', tf.__version__, 'GPUs:', g); assert g, 'TensorFlow sees no GPU'" \
  | tee -a "$dest/gpu_check_device.txt"
# --max-step-s 20 skips nothing on an H100-class card at this size (full CE at
# C=10^7 does not fit: 8,192 x 10^7 fp32 logits are 328 GB).
timeout 540 python benchmarks/loss_scaling.py --gpu --threads 0 \
  --n-rows 8192 --catalog-sizes 1e5,1e6,1e7 --steps 5 --warmup 1 \
  --max-step-s 20 --config-timeout-s 120 --out-dir "$dest" 2>&1 | tee "$dest/gpu_check.log"
