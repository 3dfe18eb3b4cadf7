#!/usr/bin/env bash
# gpt2_tiny on Tiny Shakespeare: ffn, topk, hypermoe and topk_adapter after the same training (2 epochs =
# 296 steps of 8 blocks of 256 tokens), one after another; each run's metrics.json lands in
# outputs/lm_tiny_shakespeare/<time>/<variant>/ and a summary in experiments/results/lm_tiny_shakespeare.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=outputs/lm_tiny_shakespeare/$(date +%Y-%m-%d_%H-%M-%S)  # a run never writes into an earlier run's folder
for variant in ffn topk hypermoe topk_adapter; do
    "$PYTHON" train.py backbone=gpt2_tiny data=lm model="$variant" trainer.max_epochs=2 logger=csv \
        hydra.run.dir="$OUT/$variant"
done
"$PYTHON" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = {v: json.loads((out / v / "metrics.json").read_text()) for v in ("ffn", "topk", "hypermoe", "topk_adapter")}
summary = {
    "command": "experiments/lm_tiny_shakespeare.sh (python train.py backbone=gpt2_tiny data=lm model=<variant> "
               f"trainer.max_epochs=2 logger=csv hydra.run.dir={out}/<variant>)",
    "note": f"one seed ({runs['ffn']['seed']}); 2 epochs = {runs['ffn']['steps']} steps of 8 x 256 tokens; wall "
            "times depend on what else ran on the machine",
    **{v: {"val_perplexity": r["final"]["val/perplexity"], "steps": r["steps"], "params": r["params"],
           "wall_seconds": r["wall_seconds"]} for v, r in runs.items()},
}
Path("experiments/results/lm_tiny_shakespeare.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PY
