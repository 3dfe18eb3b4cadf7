#!/usr/bin/env bash
# The GPU check, one short prepared run on a CUDA machine (sized for one H200), in bf16 autocast as
# bf16-mixed training runs. What it checks:
#   1. the layer benchmark at d_model 1024 and 2048, 4k and 16k tokens, top-1 and top-2 (GPU
#      targets: top-1 topk <= 1.25x an expert-sized dense FFN, hypermoe <= 1.08x topk), with each
#      case's expert-GEMM TFLOP/s as a fraction of a plain bf16 matmul of the same size timed in
#      the same run;
#   2. the whole-model training-step benchmark (throughput and peak memory of every variant);
#   3. the paper's two settings at full size and at the paper's batch (switch-base-8 on SuperGLUE:
#      batch 8, source 256; GPT-2 small with 8 upcycled experts on WikiText-2: batch 4, block
#      1,024), for ffn, topk, hypermoe and topk_adapter: parameter counts against the published
#      ones, two training steps (the paper's batch, then half of it), one validation step with
#      generation, step times, torch.cuda.max_memory_allocated, and the batch that fits 80 / 141 GB
#      (sized for under 8 minutes; random weights when the hub is unreachable, as offline).
# Every result goes under one folder to bring back: OUT (default experiments/results/gpu), with
# the machine's description and the whole log. Usage: bash experiments/bench_gpu.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
PYTHON=${PYTHON:-python}
out=${1:-experiments/results/gpu}
mkdir -p "$out"
exec > >(tee "$out/bench_gpu.log") 2>&1
$PYTHON -c "import torch; assert torch.cuda.is_available(), 'bench_gpu.sh needs a CUDA device'"
{ nvidia-smi || true; $PYTHON -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } \
    > "$out/machine.txt"
# hypermoe_pertoken: 2 GB of generated adapters at 4k tokens x d2048, 8 GB at 16k: 4k only
$PYTHON experiments/bench_moe.py --device cuda --dtype bf16 --d-model 1024 2048 --tokens 4096 16384 \
    --seq-len 1024 --top-k 1 2 --rounds 10 --pertoken-max-tokens 4096 --out "$out/bench_moe_gpu.json"
$PYTHON experiments/bench_train.py --device cuda --dtype bf16 --out "$out/bench_train_gpu.json"
$PYTHON experiments/paper_dryrun.py --device cuda --dtype bf16 --out "$out/paper_dryrun"
