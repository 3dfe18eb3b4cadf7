#!/usr/bin/env bash
# The GPU check of issue 6, one short prepared run on a CUDA machine (sized for an H200):
#   1. the layer benchmark in bf16 autocast at d_model 1024 and 2048, 4k and 16k tokens, top-1
#      and top-2 (GPU targets: top-1 topk <= 1.25x an expert-sized dense FFN, hypermoe <= 1.08x
#      topk), with each case's expert-GEMM TFLOP/s as a fraction of a plain bf16 matmul of the
#      same size timed in the same run;
#   2. the whole-model training-step benchmark in bf16.
# Writes experiments/results/bench_{moe,train}_gpu.{json,md}. Usage: bash experiments/bench_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
PYTHON=${PYTHON:-python}
results=experiments/results
$PYTHON -c "import torch; assert torch.cuda.is_available(), 'bench_gpu.sh needs a CUDA device'"
# hypermoe_pertoken: 2 GB of generated adapters at 4k tokens x d2048, 8 GB at 16k: 4k only
$PYTHON experiments/bench_moe.py --device cuda --dtype bf16 --d-model 1024 2048 --tokens 4096 16384 \
    --seq-len 1024 --top-k 1 2 --rounds 10 --pertoken-max-tokens 4096 --out $results/bench_moe_gpu.json
$PYTHON experiments/bench_train.py --device cuda --dtype bf16 --out $results/bench_train_gpu.json
