#!/usr/bin/env bash
# The one prepared script for a lent GPU (device tool): train-step speed and MFU against PyTorch, with XLA's and
# cuDNN's attention side by side (embed_jax/models/attention.py). Run from the repository root there.
# The GPU image has its own jax/flax (jax 0.11.2, flax 0.12.10 on 2026-11-27; flax 0.12.8 does not import with that
# jax); optax/ml-collections of this project's versions travel as wheels in .whl/ (see
# /work/.library/device/README.md for how to carry files).
set -uo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  rm -rf /tmp/site
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.85
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
python3 -c "import jax, flax, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__, jax.devices())"
PEAK=${PEAK:-989}  # H100/H200 SXM dense bf16 peak, TFLOP/s (NVIDIA datasheet)
python3 benchmarks/train_step.py --gpu --model bert-base --batch 128 --length 256 --dtype bfloat16 --steps 10 --warmup 3 \
  --peak-tflops "$PEAK" --attention xla,cudnn
python3 benchmarks/train_step.py --gpu --model bert-large --batch 128 --length 512 --dtype bfloat16 --steps 5 --warmup 2 \
  --peak-tflops "$PEAK" --attention cudnn,xla
