#!/usr/bin/env bash
# Training-step speed and peak GPU memory at the authors' D-FAUST setting (M=6, 5,000 volume / 1,500 surface /
# 200 sphere points) for batch 1, 4 and 16, fp32 and bf16 (INN autocast). Sized to finish in under 5 minutes on
# one GPU. Usage: bash bench/gpu.sh   (from the repo root, with the project's Python environment active)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('GPU:', torch.cuda.get_device_name(0))"
for batch in 1 4 16; do
  for precision in "" "--bf16"; do
    $PY bench/train_step.py --device cuda --batch "$batch" $precision --repeats 5 | grep -E "^training step|^step |it/s"
  done
done
