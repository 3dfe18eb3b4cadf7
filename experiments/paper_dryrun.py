"""The paper's two settings at their full size, built and run for a few steps: a dry run that
shows they fit and what they cost before anyone rents a GPU.

For each variant (ffn, topk, hypermoe, topk_adapter) it builds, with train.py's own builders:

- switch-base-8 text-to-text on SuperGLUE (the paper's main setting): source 256 tokens, paper
  batch 8, the target a label string ("0" / "1", RTE's);
- GPT-2 small with every block's MLP upcycled into 8 experts on WikiText-2: block 1,024 tokens,
  paper batch 4.

Weights: the pretrained ones when the Hugging Face hub (or its cache) has them, else the published
architecture with random weights (``SWITCH_BASE_8``, ``GPT2_SMALL``), and the report says which.
Inputs are random token ids at the full length (no padding: the most memory a batch can take).

Per model it reports the parameter counts (total, active per token, hypernetwork), each checked
against a reference: the total of transformers' own model of the same configuration (topk for
Switch, whose sparse blocks it replaces one for one; ffn for GPT-2) and, at full size, the
published count; then two training steps (forward, task loss + weighted aux losses, backward,
AdamW) at two batch sizes, and one validation step (Switch: the teacher-forced loss and greedy
generation of the label text; GPT-2: the validation loss). Per step: seconds, peak memory, and the
activations saved for backward (bytes of the distinct tensors autograd keeps, weights left out).

Memory: on CPU each model runs in a fresh process (the peak RSS of one holding several models says
nothing about one), with AdamW applied to each parameter as soon as its gradient is complete
(torch's optimizer-in-backward pattern: the same update, but gradients never all exist at once, so
switch-base-8 trains in about 12 bytes per parameter instead of 16; gradient clipping, which needs
every gradient first, is skipped there). On CUDA the step is Lightning's: clipping, then one fused
AdamW step, under bf16 autocast; memory is ``torch.cuda.max_memory_allocated``, one model at a time.

Projection to the paper's batch on one GPU of 80 GB and of 141 GB (decimal GB): fp32 weights,
fp32 gradients and AdamW's two fp32 states (16 bytes per parameter, what bf16-mixed keeps), plus
the saved activations fitted linearly in the batch from the two measured steps (intercept +
per-sample slope), in the run's dtype (a CPU run measures fp32 activations). Transient workspace
(matmul buffers, the allocator's rounding) is not in the projection; the GPU run's measured peak at
the paper's batch is what settles it.

    python experiments/paper_dryrun.py                      # CPU, batch 2 then 1: experiments/results/paper_dryrun_cpu/
    python experiments/paper_dryrun.py --device cuda --dtype bf16 --out experiments/results/gpu/paper_dryrun
    python experiments/paper_dryrun.py --tiny               # switch_tiny and gpt2_tiny: checks the code path
"""

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _this_checkout  # noqa: F401  (first: this checkout's hypermoe, not an installed one)
import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from transformers import GPT2LMHeadModel, SwitchTransformersForConditionalGeneration

from hypermoe.backbones.causal_lm import build_causal_lm
from hypermoe.backbones.seq2seq import build_seq2seq
from hypermoe.config import PROJECT_ROOT, RESULTS_DIR, compose_config, git_revision, script_command, to_container
from hypermoe.data.seq2seq import IGNORE_INDEX
from hypermoe.data.tasks import get_task
from hypermoe.data.text2text import parse_label
from hypermoe.lit_module import next_token_loss, parameter_groups, target_loss
from hypermoe.moe import sum_aux_losses, weighted_aux_loss
from hypermoe.moe.build import count_parameters
from hypermoe.params import parameter_counts

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # bench_train is a script beside this one (see bench_train.py)
    sys.path.insert(0, str(HERE))
from bench_moe import machine_name, torch_threads  # noqa: E402
from bench_train import in_fresh_process, memory_mark, memory_peak, pretrained_or_random  # noqa: E402

RESULTS = PROJECT_ROOT / RESULTS_DIR / "paper_dryrun_cpu"
MB = 2**20
GPUS_GB = {"80GB": 80, "141GB": 141}  # one A100 / H100 80 GB; one H200
STATIC_BYTES_PER_PARAMETER = 16  # fp32 weight, fp32 gradient, AdamW's exp_avg and exp_avg_sq

# google/switch-base-8's config.json on the Hugging Face hub (transformers' SwitchTransformersConfig
# defaults are a smaller model: d_ff 2048, 3 sparse blocks per stack). Tied embeddings, as the
# config.json leaves tie_word_embeddings at its default: 619,339,008 parameters, the hub's "620M".
SWITCH_BASE_8 = {
    "vocab_size": 32128,
    "d_model": 768,
    "d_kv": 64,
    "d_ff": 3072,
    "num_layers": 12,
    "num_decoder_layers": 12,
    "num_heads": 12,
    "num_experts": 8,
    "num_sparse_encoder_layers": 6,
    "num_sparse_decoder_layers": 6,
    "expert_capacity": 64,
    "router_jitter_noise": 0.01,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "dense_act_fn": "relu",
    "decoder_start_token_id": 0,
}
# openai-community/gpt2's config.json (GPT-2 small); its vocabulary is the tokenizer's 50,257
GPT2_SMALL = {"n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024}


@dataclasses.dataclass(frozen=True)
class Published:
    """A published parameter count of one variant's model and where it is stated."""

    variant: str
    parameters: float
    source: str
    tolerance: float = 0.005  # "620M" is rounded to 3 digits


@dataclasses.dataclass(frozen=True)
class Family:
    """One of the paper's settings: its Hydra overrides and sizes."""

    overrides: tuple[str, ...]
    seq_len: int
    paper_batch: int
    random_config: dict[str, Any] | None = None  # the published architecture, when the weights are unreachable
    published: Published | None = None


FAMILIES = {
    "switch_base_8": Family(
        ("backbone=switch_base_8", "data=superglue", "data.task=rte"),
        seq_len=256,
        paper_batch=8,
        random_config=SWITCH_BASE_8,
        published=Published("topk", 620e6, "https://huggingface.co/google/switch-base-8 (model size: 620M params)"),
    ),
    "gpt2_moe": Family(
        ("backbone=gpt2_moe", "data=lm", "data.task=wikitext2"),
        seq_len=1024,
        paper_batch=4,
        random_config=GPT2_SMALL,
        published=Published("ffn", 124e6, "https://huggingface.co/openai-community/gpt2 (model size: 124M params)"),
    ),
}
# --tiny: the same code path on the tiny random backbones of the same families
TINY = {
    "switch_base_8": Family(("backbone=switch_tiny", "data=superglue", "data.task=rte"), seq_len=32, paper_batch=4),
    "gpt2_moe": Family(("backbone=gpt2_tiny", "data=lm", "data.task=tinyshakespeare"), seq_len=64, paper_batch=4),
}
VARIANTS = ("ffn", "topk", "hypermoe", "topk_adapter")
LABELS = ("0", "1")  # RTE's targets in the paper's text-to-text format


@dataclasses.dataclass(frozen=True)
class Job:
    """One model to build and run (picklable: a worker process gets it)."""

    family: str
    variant: str
    tiny: bool
    device: str
    dtype: str
    batches: tuple[int, int]
    optimizer: str  # "step" (clipping, one AdamW step) or "in_backward" (per parameter, no clipping)
    random_weights: bool
    threads: int


@dataclasses.dataclass
class Model:
    """A built model and what a step of it needs."""

    net: nn.Module
    loss: Callable[[int], Tensor]  # the task loss on a batch of the given size
    validate: Callable[[int], dict[str, Any]]  # one validation step on a batch of the given size
    weights: str
    reference_total: int  # transformers' own model of the same configuration
    reference_variant: str
    # the run's training settings (build_model sets them from the composed config)
    coefficients: dict[str, float] = dataclasses.field(default_factory=dict)  # the aux losses' weights
    optimizer: Any = None  # conf/train.yaml's optimizer (AdamW, partial)
    clip: float | None = None


def family_of(job: Job) -> Family:
    return (TINY if job.tiny else FAMILIES)[job.family]


def weights_source(job: Job, backbone: dict[str, Any]) -> str:
    """Loads the pretrained weights when reachable; else switches ``backbone`` to the published
    architecture with random weights. Returns what was used, in words."""
    if backbone["pretrained"] is None:
        return "random (a tiny test configuration)"
    return pretrained_or_random(backbone, family_of(job).random_config, job.random_weights)


def random_ids(generator: torch.Generator, high: int, shape: tuple[int, ...], device: str) -> Tensor:
    return torch.randint(high, shape, generator=generator).to(device)


def build_switch(job: Job, cfg: Any, backbone: dict, model: dict, weights: str) -> Model:
    net, tokenizer = build_seq2seq(backbone, model)
    net.to(job.device)
    task = get_task(cfg.data.benchmark, cfg.data.task)
    seq_len = family_of(job).seq_len
    inputs = torch.Generator().manual_seed(0)

    def batch(size: int) -> dict[str, Tensor]:
        ids = random_ids(inputs, tokenizer.vocab_size, (size, seq_len), job.device)
        targets = [LABELS[i % len(LABELS)] for i in range(size)]
        labels = tokenizer(text_target=targets, padding=True, return_tensors="pt")["input_ids"].to(job.device)
        labels = labels.masked_fill(labels == tokenizer.pad_token_id, IGNORE_INDEX)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    def loss_of(data: dict[str, Tensor]) -> Tensor:
        labels = data["labels"]
        return target_loss(net(data["input_ids"], data["attention_mask"], labels, labels != IGNORE_INDEX), labels)

    def validate(size: int) -> dict[str, Any]:
        data = batch(size)
        target_length = int((data["labels"] != IGNORE_INDEX).sum(1).max())
        generated = net.generate(data["input_ids"], data["attention_mask"], max_new_tokens=target_length, num_beams=1)
        texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
        return {
            "loss": float(loss_of(data)),
            "generated": texts,
            "invalid": sum(parse_label(task, text) is None for text in texts) / len(texts),
        }

    reference = _meta_count(SwitchTransformersForConditionalGeneration, net.model.config)
    return Model(net, lambda size: loss_of(batch(size)), validate, weights, reference, "topk")


def build_gpt2(job: Job, cfg: Any, backbone: dict, model: dict, weights: str) -> Model:
    net, tokenizer = build_causal_lm(backbone, model)
    net.to(job.device)
    seq_len = family_of(job).seq_len
    inputs = torch.Generator().manual_seed(0)

    def loss(size: int) -> Tensor:
        ids = random_ids(inputs, len(tokenizer), (size, seq_len), job.device)
        return next_token_loss(net(ids, torch.ones_like(ids)), ids)

    def validate(size: int) -> dict[str, Any]:
        return {"loss": float(loss(size))}

    return Model(net, loss, validate, weights, _meta_count(GPT2LMHeadModel, net.lm.config), "ffn")


def _meta_count(model_class: type, config: Any) -> int:
    """Parameters of transformers' own model of ``config``, built on the meta device (no memory)."""
    with torch.device("meta"):
        return count_parameters(model_class(config))


BUILDERS = {"switch_base_8": build_switch, "gpt2_moe": build_gpt2}


def build_model(job: Job) -> Model:
    overrides = [
        *family_of(job).overrides,
        f"model={job.variant}",
        f"trainer={'gpu' if job.device == 'cuda' else 'cpu'}",
    ]
    cfg = compose_config("train", overrides, tempfile.gettempdir())
    backbone, model = to_container(cfg.backbone), to_container(cfg.model)
    coefficients = model.pop("aux_loss_coefficients")
    weights = weights_source(job, backbone)
    torch.manual_seed(0)  # the same initialisation draws for every variant
    built = BUILDERS[job.family](job, cfg, backbone, model, weights)
    return dataclasses.replace(
        built, coefficients=coefficients, optimizer=cfg.optimizer, clip=cfg.trainer.gradient_clip_val
    )


@contextlib.contextmanager
def saved_activations(net: nn.Module) -> Iterator[dict[int, int]]:
    """Bytes of every distinct storage autograd saves for backward inside the block, by address,
    the parameters' own left out (views of one storage count once)."""
    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield saved


def step_now(optimizer: torch.optim.Optimizer) -> Callable[[Tensor], None]:
    """A post-accumulate-grad hook: the parameter's update, then its gradient freed."""

    def hook(_: Tensor) -> None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return hook


def training_step(job: Job, built: Model) -> Callable[[int], dict[str, float]]:
    """A training step on a batch of the given size, as configured: with ``in_backward`` each
    parameter gets its own AdamW (its group's settings), stepped by a hook the moment its gradient
    is complete; with ``step`` one AdamW over all parameters after clipping, as Lightning runs it."""
    net, device, bf16 = built.net, job.device, job.dtype == "bf16"
    factory = instantiate(built.optimizer)
    if job.optimizer == "in_backward":
        for group in parameter_groups(net):
            for parameter in group.pop("params"):
                parameter.register_post_accumulate_grad_hook(
                    step_now(factory(params=[{"params": [parameter], **group}]))
                )
        optimizer = None
    else:
        optimizer = factory(params=parameter_groups(net))
    clip = built.clip

    def step(size: int) -> dict[str, float]:
        mark = memory_mark(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        with saved_activations(net) as saved, torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = built.loss(size) + weighted_aux_loss(sum_aux_losses(net.moe), built.coefficients).to(device)
        activations = sum(saved.values())
        loss.backward()
        if optimizer is not None:
            if clip:
                nn.utils.clip_grad_norm_(net.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return {
            "batch": size,
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu_start,
            "peak_mem_mb": memory_peak(device),
            "start_mem_mb": mark,
            "activations_mb": activations / MB,
            "loss": float(loss.detach()),
        }

    return step


def validation_step(job: Job, built: Model, size: int) -> dict[str, Any]:
    mark = memory_mark(job.device)
    built.net.eval()
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.inference_mode(), torch.autocast(job.device, dtype=torch.bfloat16, enabled=job.dtype == "bf16"):
        result = built.validate(size)
    if job.device == "cuda":
        torch.cuda.synchronize()
    timing = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start}
    built.net.train()
    return {"batch": size, **timing, "peak_mem_mb": memory_peak(job.device), "start_mem_mb": mark, **result}


def run_model(job: Job) -> dict[str, Any]:
    """Build one model, check its counts, run two training steps and a validation step, and project
    the paper's batch from the two steps."""
    torch.set_num_threads(job.threads)  # a worker process starts with torch's default
    start, cpu_start = time.perf_counter(), time.process_time()
    built = build_model(job)
    build_seconds, build_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    built_mem = memory_mark(job.device)
    counts = parameter_counts(built.net)
    step = training_step(job, built)
    steps = [step(size) for size in job.batches]
    validation = validation_step(job, built, job.batches[-1])
    result = {
        "family": job.family,
        "variant": job.variant,
        "weights": built.weights,
        "pretrained": built.weights.startswith("pretrained"),
        "params": counts,
        "reference": reference_check(job, built, counts),
        "build_seconds": build_seconds,
        "build_cpu_seconds": build_cpu_seconds,
        "load_average": os.getloadavg()[0],  # other processes' share of the cores while this model ran
        "built_mem_mb": built_mem,
        "steps": steps,
        "validation": validation,
    }
    result["projection"] = projection(result, family_of(job).paper_batch)
    del built, step
    gc.collect()
    if job.device == "cuda":
        torch.cuda.empty_cache()
    return result


def reference_check(job: Job, built: Model, counts: dict[str, int]) -> dict[str, Any]:
    """The reference counts for this model: transformers' own model (for the variant that keeps
    its layers' shapes) and the published count (at full size, for the variant it describes)."""
    check: dict[str, Any] = {"variant": built.reference_variant, "transformers_total": built.reference_total}
    if job.variant == built.reference_variant:
        check["transformers_matches"] = counts["total"] == built.reference_total
    published = family_of(job).published
    if published is not None and job.variant == published.variant:
        relative = counts["total"] / published.parameters - 1
        check |= {
            "published": published.parameters,
            "published_source": published.source,
            "published_relative_difference": relative,
            "published_matches": abs(relative) <= published.tolerance,
        }
    return check


def projection(result: dict[str, Any], paper_batch: int) -> dict[str, Any]:
    """Memory of the paper's batch on one GPU: 16 bytes per parameter (fp32 weights, gradients,
    AdamW's two states) plus the saved activations, fitted linearly in the batch from the two
    training steps; and the largest batch that fits each GPU by the same fit."""
    (small, large) = result["steps"][:2]
    slope = (large["activations_mb"] - small["activations_mb"]) / (large["batch"] - small["batch"]) * MB
    if slope <= 0:
        raise ValueError(
            f"no projection: the saved activations did not grow with the batch ({small['activations_mb']:.0f} MB at "
            f"batch {small['batch']}, {large['activations_mb']:.0f} MB at batch {large['batch']})"
        )
    intercept = small["activations_mb"] * MB - slope * small["batch"]
    static = STATIC_BYTES_PER_PARAMETER * result["params"]["total"]
    peak = static + intercept + slope * paper_batch
    gpus = {}
    for name, gigabytes in GPUS_GB.items():
        room = gigabytes * 1e9 - static - intercept
        gpus[name] = {"fits": peak <= gigabytes * 1e9, "max_batch": math.floor(room / slope) if room > 0 else 0}
    return {
        "paper_batch": paper_batch,
        "static_gb": static / 1e9,
        "activations_per_sample_gb": slope / 1e9,
        "activations_intercept_gb": intercept / 1e9,
        "peak_gb": peak / 1e9,
        "gpus": gpus,
    }


def run_all(jobs: list[Job], in_process: bool, finished: Callable[[Job, dict | Exception], None]) -> None:
    """Every job, one model at a time, each model's result (or the exception it raised: one model
    that fails does not cost the others) handed to ``finished`` as it comes: in this process (CUDA:
    the allocator's counters are per model once it is freed) or each in a fresh worker forked from
    a server that has imported the libraries (CPU: peak RSS is per process)."""
    for job in jobs:
        try:
            result = run_model(job) if in_process else in_fresh_process(run_model, job)
        except Exception as error:  # recorded in the report; the exit status says so
            result = error
        finished(job, result)


def markdown(report: dict[str, Any]) -> str:
    loads = [row["load_average"] for row in report["models"]] or [math.nan]
    lines = [
        f"# Paper settings dry run ({report['device']}, {report['dtype']}, batches {report['batches']})",
        "",
        f"`{report['command']}` at `{report['git']}`, {report['machine']}, torch {report['torch']}, "
        f"{report['threads']} threads: "
        f"{report['wall_seconds']:.0f} s wall, of which the models' own processes used {report['cpu_seconds']:.0f} "
        f"CPU seconds (load average {min(loads):.1f}-{max(loads):.1f} from other processes and this one). "
        f"{report['projection_method']}",
        "",
    ]
    if not report["complete"]:
        lines += [f"**Incomplete**: {len(report['models'])} of {report['models_planned']} models ran.", ""]
    lines += [f"**Failed**: {f['family']} {f['variant']}: {f['error']}" for f in report["failures"]]
    lines += [""] if report["failures"] else []
    lines += [
        "| model | weights | params total / active / hypernetwork (M) | reference | step s (batch) "
        "| peak MB (second step) | activations MB per sample | val s | projected GB at paper batch "
        "| max batch 80 GB / 141 GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["models"]:
        params, check, projected = row["params"], row["reference"], row["projection"]
        verdicts = []
        if "transformers_matches" in check:
            verdicts.append(
                f"transformers {'=' if check['transformers_matches'] else '!='} {check['transformers_total']:,}"
            )
        if "published_matches" in check:
            verdicts.append(
                f"published {check['published'] / 1e6:.0f}M: {'ok' if check['published_matches'] else 'MISMATCH'} "
                f"({check['published_relative_difference']:+.2%})"
            )
        steps = ", ".join(f"{s['seconds']:.1f} ({s['batch']})" for s in row["steps"])
        peak = row["steps"][-1]["peak_mem_mb"]  # with AdamW's state allocated
        gpus = " / ".join(str(g["max_batch"]) for g in projected["gpus"].values())
        lines.append(
            f"| {row['family']} {row['variant']} | {'pretrained' if row['pretrained'] else 'random'} | "
            f"{' / '.join(f'{params[key] / 1e6:.1f}' for key in ('total', 'active_per_token', 'hypernetwork'))} | "
            f"{'; '.join(verdicts) or '-'} | {steps} | {peak:.0f} | "
            f"{projected['activations_per_sample_gb'] * 1e3:.0f} | {row['validation']['seconds']:.1f} | "
            f"{projected['peak_gb']:.1f} ({projected['paper_batch']}) | {gpus} |"
        )
    weights = sorted({row["weights"] for row in report["models"]})
    lines += ["", "Weights: " + "; ".join(weights) + "."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast, as bf16-mixed")
    parser.add_argument(
        "--batches",
        nargs=2,
        type=int,
        help="the two training steps' batch sizes; validation at the second "
        "(default CPU: 2 1; CUDA: half the paper's, the paper's)",
    )
    parser.add_argument(
        "--optimizer",
        choices=["step", "in_backward"],
        help="step: clipping and one AdamW step (CUDA's default); in_backward: AdamW per parameter in backward (CPU's)",
    )
    parser.add_argument("--random-weights", action="store_true", help="do not look for the pretrained weights")
    parser.add_argument(
        "--tiny", action="store_true", help="switch_tiny and gpt2_tiny at short lengths: checks the path"
    )
    parser.add_argument("--in-process", action="store_true", help="no worker processes (CUDA always runs in-process)")
    parser.add_argument("--threads", type=int, help="torch threads; default: torch's (one per core)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for paper_dryrun.json and paper_dryrun.md")
    args = parser.parse_args(argv)
    if args.batches and (min(args.batches) < 1 or args.batches[0] == args.batches[1]):
        parser.error(f"--batches {args.batches[0]} {args.batches[1]}: two different batch sizes of at least 1")
    args.optimizer = args.optimizer or ("step" if args.device == "cuda" else "in_backward")
    args.in_process = args.in_process or args.device == "cuda"
    return args


def batches_of(args: argparse.Namespace, family: Family) -> tuple[int, int]:
    """The second step runs with AdamW's state allocated (the first step allocates it): on CUDA
    that is the paper's batch, whose peak is then the steady one. On CPU the larger batch goes
    first, as its activations are freed during backward while the state is allocated, so the two
    never peak together (GPT-2 MoE at batch 2 once the state exists would hold 6.6 GB of weights
    and state plus 5.3 GB of activations)."""
    if args.batches:
        return tuple(args.batches)
    return (family.paper_batch // 2, family.paper_batch) if args.device == "cuda" else (2, 1)


def build_report(
    args: argparse.Namespace,
    families: dict[str, Family],
    threads: int,
    command: str,
    revision: str,
    wall_seconds: float,
    models: list[dict[str, Any]],
    failures: list[dict[str, str]],
    planned: int,
) -> dict[str, Any]:
    return {
        "what": "the paper's settings built at full size; two training steps and one validation step per model",
        "device": args.device,
        "dtype": args.dtype,
        "batches": {name: batches_of(args, families[name]) for name in args.families},
        "optimizer": args.optimizer,
        "tiny": args.tiny,
        "complete": len(models) == planned,
        "models_planned": planned,
        "inputs": "random token ids at the full length, no padding; Switch targets: RTE's label strings",
        "projection_method": (
            "Projected GPU memory: 16 bytes per parameter (fp32 weights, gradients, AdamW's two states) plus the "
            "activations saved for backward, fitted linearly in the batch from the two training steps, in the run's "
            f"dtype ({args.dtype}); transient workspace not included. GB are 1e9 bytes, MB 2**20."
        ),
        "machine": machine_name(args.device),
        "torch": torch.__version__,
        "threads": threads,
        "git": revision,
        "command": command,
        "wall_seconds": wall_seconds,
        "cpu_seconds": sum(
            row["build_cpu_seconds"] + row["validation"]["cpu_seconds"] + sum(s["cpu_seconds"] for s in row["steps"])
            for row in models
        ),
        "models": models,
        "failures": failures,
    }


def write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "paper_dryrun.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "paper_dryrun.md").write_text(markdown(report))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    with torch_threads(args.threads):
        return dry_run(args, argv)


def dry_run(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    threads = torch.get_num_threads()
    families = TINY if args.tiny else FAMILIES
    jobs = [
        Job(
            name,
            variant,
            args.tiny,
            args.device,
            args.dtype,
            batches_of(args, families[name]),
            args.optimizer,
            args.random_weights,
            threads,
        )
        for name in args.families
        for variant in args.variants
    ]
    start = time.perf_counter()
    command = script_command("experiments/paper_dryrun.py", argv)
    revision = git_revision()  # before the first write: an --out outside RESULTS_DIR would make it +dirty
    models: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []

    def report_now() -> dict[str, Any]:
        wall_seconds = time.perf_counter() - start
        report = build_report(args, families, threads, command, revision, wall_seconds, models, failures, len(jobs))
        write_report(args.out, report)
        return report

    def finished(job: Job, row: dict[str, Any] | Exception) -> None:
        """Print a model's row (or why it failed) and rewrite the report: a run cut short keeps the
        models it finished."""
        if isinstance(row, Exception):
            failures.append({"family": job.family, "variant": job.variant, "error": f"{type(row).__name__}: {row}"})
            print(f"{job.family} {job.variant}: FAILED: {failures[-1]['error']}", flush=True)
        else:
            models.append(row)
            steps = ", ".join(
                f"batch {s['batch']}: {s['seconds']:.1f} s, {s['peak_mem_mb']:.0f} MB" for s in row["steps"]
            )
            params = f"{row['params']['total'] / 1e6:.1f} M params"
            print(f"{row['family']} {row['variant']}: {params}, {row['weights']}; {steps}", flush=True)
        report_now()

    run_all(jobs, args.in_process, finished)
    report = report_now()
    print(f"wrote {args.out / 'paper_dryrun.json'} and {args.out / 'paper_dryrun.md'}")
    if failures:
        raise SystemExit(f"{len(failures)} of {len(jobs)} models failed (their errors are in the report)")
    return report


if __name__ == "__main__":
    main()
