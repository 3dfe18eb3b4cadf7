"""Training-step throughput and memory of whole models, one per MoE variant, built as train.py builds them.

A step is what Lightning runs per batch: forward, task loss + weighted MoE aux losses, backward,
gradient clipping and the configured AdamW step (fused), on random token ids (attention mask all
ones). Each variant (ffn, topk k=1, topk k=2, dense_moe, hypermoe, topk_adapter) is composed from
conf/ with Hydra and built by the backbones' own builders, on MiniLM (pretrained, or its
published architecture with random weights where the weights cannot be loaded; sequence 128)
and the tiny random GPT-2 (block 256), or (``--backbones nanogpt_char``) nanoGPT's CPU baby GPT on
Tiny Shakespeare's characters (batch 12 x 64), whose topk / hypermoe run is the efficiency table
of the character-level benchmark:

    python experiments/bench_train.py --backbones nanogpt_char --variants topk hypermoe --threads 1 \
        --out experiments/results/efficiency_char_cpu.json

    python experiments/bench_train.py                        # writes experiments/results/bench_train.json
    python experiments/bench_train.py --backbones minilm --rounds 4
    python experiments/bench_train.py --variants topk hypermoe   # two variants alone: one ratio, checked again
    python experiments/bench_train.py --device cuda --dtype bf16
    python experiments/bench_train.py --quick                # tiny shapes, to check the script runs

Timing: all variants of one backbone live in one process and are timed alternately (round-robin,
order reversed every other round) after warm-up steps. These machines are shared and noisy, so
only numbers measured together mean anything: ``tokens_per_s`` is batch * sequence over the best
round, and each throughput ratio is the median over rounds of the two variants' ratio within a
round (bench_moe.py's ``time_alternately`` and ``paired_ratio``). Each step is also timed in its
two phases, the model (zero_grad, forward, backward) and the optimizer (clipping, AdamW): an MoE
does a dense model's FLOPs per token, but its optimizer updates every expert's parameters, so the
``*_model_throughput`` ratios and each variant's ``optimizer_share`` tell the two costs apart.
Each round also times one inference pass per variant (eval mode, forward alone, no autograd, same
batch): ``inference_tokens_per_s`` and the ``*_inference_throughput`` ratio. ``model_flops`` is
one model pass's FLOPs as torch's FlopCounterMode counts them (matmuls and attention), and
``hypermoe_over_topk_model_flop_limit`` the model-throughput ratio they allow: what the FLOPs
alone would cost, leaving out the memory-bound work (elementwise ops, gathers, and reading a large
weight for few rows, as the hypernetwork's heads do).

Memory: on CPU each variant runs in a fresh process (the RSS of a process holding six models says
nothing about one), forked from a server that has imported the libraries, with glibc told to
return large blocks on free (``in_fresh_process``): ``peak_mem_mb`` is the peak RSS (VmHWM) over a
few training steps, the whole process included; ``step_mem_mb`` is that
peak minus the RSS once the model is built (gradients, optimizer state, activations). On CUDA:
``torch.cuda.max_memory_allocated`` over the same steps, in-process, and the same difference.
MB are 2**20 bytes.

Threads: torch's default (one per core) unless --threads; --quick uses one, as tiny steps on a
busy machine spend most of their time at thread barriers with two.
"""

import argparse
import gc
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _this_checkout  # noqa: F401  (first: this checkout's hypermoe, not an installed one)
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from hypermoe.backbones.causal_lm import build_causal_lm
from hypermoe.backbones.classifier import build_classifier
from hypermoe.backbones.heads import task_loss
from hypermoe.backbones.sources import resolve_pretrained
from hypermoe.config import PROJECT_ROOT, RESULTS_DIR, compose_config, git_revision, script_command, to_container
from hypermoe.data.datamodule import TaskDataModule
from hypermoe.lit_module import next_token_loss, parameter_groups
from hypermoe.moe import sum_aux_losses, weighted_aux_loss
from hypermoe.params import parameter_counts
from hypermoe.validation import instantiate_data

# experiments/ is a folder of scripts, not a package: bench_moe is found through this file's
# folder on sys.path. Python puts it there only when this file runs as a script, so it is added
# here for the other ways in (imported by the tests); a plain import keeps one bench_moe module.
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from bench_moe import count_flops, machine_name, paired_ratio, record_failure, time_alternately  # noqa: E402

RESULTS = PROJECT_ROOT / RESULTS_DIR / "bench_train.json"

# backbone -> its Hydra overrides; the data config only names the task whose head is built
BACKBONES = {
    "minilm": ["backbone=minilm", "data=glue", "data.task=sst2"],
    "gpt2_tiny": ["backbone=gpt2_tiny", "data=lm"],
    "bert_tiny": ["backbone=bert_tiny", "data=glue", "data.task=sst2"],  # for --quick
    # its vocabulary is the training text's characters: needs the data root (HYPERMOE_DATA)
    "nanogpt_char": ["backbone=nanogpt_char", "data=lm", "data.task=shakespeare_char"],
}
VARIANTS = {
    "ffn": ["model=ffn"],
    "topk": ["model=topk", "model.top_k=1"],
    "topk_k2": ["model=topk", "model.top_k=2"],
    "dense_moe": ["model=dense_moe"],
    "hypermoe": ["model=hypermoe"],
    "topk_adapter": ["model=topk_adapter"],
}
# ratio -> (numerator variant, denominator variant, measure, bound, "min" or "max"); a throughput
# measure names the timed phase: the whole step, or the model alone (what the optimizer adds is
# the rest); model_flop_limit is the model_throughput ratio if every counted FLOP cost the same
RATIOS = {
    "topk_over_ffn_throughput": ("topk", "ffn", "throughput", 0.92, "min"),
    "hypermoe_over_topk_throughput": ("hypermoe", "topk", "throughput", 0.95, "min"),
    "topk_over_ffn_model_throughput": ("topk", "ffn", "model_throughput", None, None),
    "hypermoe_over_topk_model_throughput": ("hypermoe", "topk", "model_throughput", None, None),
    "hypermoe_over_topk_inference_throughput": ("hypermoe", "topk", "inference_throughput", None, None),
    "hypermoe_over_topk_model_flop_limit": ("hypermoe", "topk", "model_flop_limit", None, None),
    "hypermoe_over_topk_memory": ("hypermoe", "topk", "peak_mem_mb", 1.05, "max"),
    "hypermoe_over_topk_step_memory": ("hypermoe", "topk", "step_mem_mb", None, None),
}
# all-MiniLM-L6-v2's published architecture (its config.json; BertConfig's defaults for the rest),
# built with random weights where the pretrained ones cannot be loaded: a step's time and memory
# depend on the shapes, not on the trained values
ARCHITECTURES = {
    "minilm": {
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "max_position_embeddings": 512,
    }
}
MEMORY_STEPS = 3  # the first allocates AdamW's state; later ones hold it beside gradients and activations
# Imported once by the server the memory workers fork from: a spawned worker would spend ~15 s
# per variant importing torch, transformers, lightning and hydra on two busy cores. train.py's
# module imports all this file needs; this file itself is not importable there (Python 3.11's
# forkserver ignores the parent's sys.path), so each worker still imports it, cheaply.
PRELOAD = ["hypermoe.train"]


def in_fresh_process(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a fresh process forked from a server that has imported ``PRELOAD``,
    so that the process's peak RSS is its task's. A process killed before it returns (the kernel's
    out-of-memory killer takes the largest model's) raises ``WorkerDied``, not a wait forever."""
    # glibc serves allocations under its (growing) mmap threshold from heaps it keeps after free,
    # so a process's RSS stays at the memory of tensors long gone (the pretrained weights a patched
    # model replaces: ~0.5 GB on MiniLM, 1.8 GB on switch-base-8). A fixed 1 MiB threshold
    # (mallopt(3)) maps every tensor of 1 MiB or more on its own and returns it on free: the
    # workers' RSS is live memory. Read when the server starts, so set before the first task.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(2**20))
    context = multiprocessing.get_context("forkserver")  # one server per program, started by the first task
    context.set_forkserver_preload(PRELOAD)
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            with _server_safe_path():
                task = pool.submit(function, *args)  # starts the worker, and the server if none runs
            return task.result()
        except BrokenProcessPool as error:
            raise WorkerDied(
                f"the process running {function.__name__} died before it returned (killed by a signal, most likely "
                "the out-of-memory killer: dmesg says), or returned what this process cannot read back"
            ) from error


@contextmanager
def _server_safe_path() -> Iterator[None]:
    """The server starts as `python -c`, whose sys.path begins with the working folder, then PYTHONPATH
    (which _this_checkout sets): run from another checkout's folder, it would preload that checkout's
    hypermoe, which every worker inherits. PYTHONSAFEPATH (Python >= 3.11) leaves the folder out; set
    only while the server starts, since a script this program starts needs its own folder on its path."""
    before = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONSAFEPATH"]
        else:
            os.environ["PYTHONSAFEPATH"] = before


class WorkerDied(RuntimeError):
    """A fresh process ended without a result."""


def variant_config(backbone: str, variant: str) -> DictConfig:
    """conf/train.yaml with the backbone's and the variant's overrides, as train.py would see it
    (nothing is written to paths.output_dir)."""
    return compose_config("train", [*BACKBONES[backbone], *VARIANTS[variant]], tempfile.gettempdir())


def default_shape(backbone: str) -> tuple[int, int]:
    """(batch, sequence length) of the backbone's training recipe."""
    recipe = variant_config(backbone, "ffn").backbone.recipe
    return recipe.batch_size, recipe.max_length


@dataclass(frozen=True)
class Setup:
    """What every variant of one backbone is measured with (picklable: the memory workers get it)."""

    backbone: str
    batch: int
    seq_len: int
    device: str
    dtype: str
    threads: int
    variants: tuple[str, ...] = tuple(VARIANTS)  # the ones to measure (--variants)
    random_weights: bool = False  # a pretrained backbone's published architecture, randomly initialised


def pretrained_or_random(backbone: dict[str, Any], architecture: dict[str, Any] | None, random_weights: bool) -> str:
    """Keeps the backbone's pretrained weights where they load (a local folder, the hub or its
    cache, the offline pip package); else, or with ``random_weights``, switches ``backbone`` in
    place to ``architecture`` (the published one) with random weights, or raises the loader's
    error where there is none. Returns which, in words."""
    name = backbone["pretrained"]
    if name is None:
        return "random (its configuration)"
    reason = "--random-weights"
    if not random_weights:
        try:
            resolve_pretrained(name)
            return f"pretrained ({name})"
        except FileNotFoundError as error:
            if architecture is None:
                raise
            reason = f"pretrained weights unavailable: {str(error).split('. Give')[0]}"
    backbone["pretrained"], backbone["config"] = None, architecture
    return f"random, {name}'s published architecture ({reason})"


def weights_of(setup: Setup, backbone: dict[str, Any]) -> str:
    """``pretrained_or_random`` for the benchmark's backbone."""
    return pretrained_or_random(backbone, ARCHITECTURES.get(setup.backbone), setup.random_weights)


@dataclass
class Workload:
    """A training step in its two phases: the model (zero_grad, forward, losses, backward) and
    the optimizer (gradient clipping, AdamW), whose work grows with the parameters an MoE holds
    (every expert's), not with the FLOPs a token sees; and an inference pass (the model in eval
    mode, forward alone, no autograd) on the same batch."""

    model_pass: Callable[[], None]
    optimizer_pass: Callable[[], None]
    params: int
    inference_pass: Callable[[], None] = lambda: None

    def step(self) -> None:
        self.model_pass()
        self.optimizer_pass()


def build_loss(cfg: DictConfig, setup: Setup) -> tuple[nn.Module, Callable[[], Tensor]]:
    """The net train.build makes from ``cfg`` (same builders, same settings) and its task loss
    on a fixed batch of random tokens."""
    model = to_container(cfg.model)
    model.pop("aux_loss_coefficients")
    backbone = to_container(cfg.backbone)
    weights_of(setup, backbone)
    inputs = torch.Generator().manual_seed(0)  # apart from the init's stream: the same batch for every variant

    def draw(high: int, shape: tuple[int, ...]) -> Tensor:
        return torch.randint(high, shape, generator=inputs).to(setup.device)

    if backbone.get("kind", "encoder") == "causal_lm":
        data = instantiate_data(cfg.data)
        net, tokenizer = build_causal_lm(backbone, model, data.char_vocabulary() if data.task.characters else None)
        ids = draw(len(tokenizer), (setup.batch, setup.seq_len))
        return net.to(setup.device), lambda: next_token_loss(net(ids, torch.ones_like(ids)), ids)
    task = TaskDataModule.resolve_task(cfg.data.benchmark, cfg.data.task)
    net, tokenizer = build_classifier(backbone, model, task.kind, task.num_labels, task.num_spans)
    ids, labels = draw(tokenizer.vocab_size, (setup.batch, setup.seq_len)), draw(task.num_labels, (setup.batch,))
    return net.to(setup.device), lambda: task_loss(net(ids, torch.ones_like(ids)), labels, task.kind)


def build_workload(setup: Setup, variant: str) -> Workload:
    """One training step of the variant's whole model, as Lightning runs it with the configured
    optimizer (AdamW, fused) and gradient clipping."""
    cfg = variant_config(setup.backbone, variant)
    torch.manual_seed(0)  # the same initialisation draws for every variant
    net, loss_task = build_loss(cfg, setup)
    device, bf16 = setup.device, setup.dtype == "bf16"
    coefficients = to_container(cfg.model.aux_loss_coefficients)
    optimizer = instantiate(cfg.optimizer)(params=parameter_groups(net))
    clip = cfg.trainer.gradient_clip_val

    def finish() -> None:
        # a phase's time is its kernels' time; on CUDA this sync between the two phases keeps the
        # optimizer's launches from overlapping backward's last kernels, as they may in a real step
        if device == "cuda":
            torch.cuda.synchronize()

    def model_pass() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_task() + weighted_aux_loss(sum_aux_losses(net.moe), coefficients).to(device)
        loss.backward()
        finish()

    def optimizer_pass() -> None:
        if clip:
            nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
        finish()

    def inference_pass() -> None:
        net.eval()
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss_task()
        net.train()
        finish()

    return Workload(model_pass, optimizer_pass, parameter_counts(net)["total"], inference_pass)


def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(f"/proc/self/status has no {field}")


def memory_mark(device: str) -> float:
    """MB in use now; the peak counter restarts from here."""
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    # "5" resets VmHWM to the current RSS (Linux >= 4.0): building the model (loading the
    # checkpoint, copying experts) may peak higher than training does
    Path("/proc/self/clear_refs").write_text("5")
    return _proc_status_mb("VmRSS")


def memory_peak(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return _proc_status_mb("VmHWM")


def measure_memory(setup: Setup, variant: str) -> dict[str, float]:
    """peak_mem_mb and step_mem_mb of MEMORY_STEPS training steps of one freshly built variant."""
    torch.set_num_threads(setup.threads)  # a worker process starts with torch's default
    workload = build_workload(setup, variant)
    built = memory_mark(setup.device)
    for _ in range(MEMORY_STEPS):
        workload.step()
    peak = memory_peak(setup.device)
    return {"peak_mem_mb": peak, "step_mem_mb": peak - built}


def measure_all_memory(setup: Setup) -> dict[str, dict[str, float]]:
    """Every variant's memory; on CPU each in a fresh process forked from a server that has only
    imported the libraries (no model, no torch thread pool yet)."""
    if setup.device != "cuda":
        return {variant: in_fresh_process(measure_memory, setup, variant) for variant in setup.variants}
    results = {}
    for variant in setup.variants:  # the allocator's own counters: in-process, one variant at a time
        results[variant] = measure_memory(setup, variant)  # its model is freed on return
        torch.cuda.empty_cache()
    return results


def timed(workload: Workload) -> Callable[[], dict[str, float]]:
    """A visit for bench_moe's time_alternately: one step's seconds, whole and by phase."""

    def visit() -> dict[str, float]:
        start = time.perf_counter()
        workload.model_pass()
        middle = time.perf_counter()
        workload.optimizer_pass()
        end = time.perf_counter()
        workload.inference_pass()
        inference = time.perf_counter() - end
        return {"step": end - start, "model": middle - start, "optimizer": end - middle, "inference": inference}

    return visit


def time_all(
    setup: Setup, rounds: int
) -> tuple[dict[str, dict[str, list[float]]], dict[str, int], dict[str, int | None]]:
    """Seconds per round of every variant, timed alternately, by phase ("step", "model",
    "optimizer"), their parameter counts and their model passes' FLOPs (None on CUDA, see count_flops)."""
    workloads = {v: build_workload(setup, v) for v in setup.variants}
    for workload in workloads.values():
        workload.step()  # AdamW's state and lazy inits; time_alternately warms up once more
    on_cpu = setup.device == "cpu"
    flops = {v: count_flops(w.model_pass) if on_cpu else None for v, w in workloads.items()}
    by_phase = time_alternately({v: timed(w) for v, w in workloads.items()}, rounds)
    return by_phase, {v: w.params for v, w in workloads.items()}, flops


THROUGHPUT_PHASES = {"throughput": "step", "model_throughput": "model", "inference_throughput": "inference"}


def ratios_of(samples: dict[str, dict[str, list[float]]], variants: dict[str, dict]) -> dict[str, float]:
    """Throughput ratios: median over rounds of the denominator's seconds over the numerator's
    in the same round, in the measure's phase. Memory ratios: of the variants' numbers. Only the
    ratios whose two variants were measured."""
    ratios = {}
    for name, (numerator, denominator, measure, _, _) in RATIOS.items():
        if not {numerator, denominator} <= variants.keys():
            continue
        if measure in THROUGHPUT_PHASES:
            ratios[name] = paired_ratio(samples[THROUGHPUT_PHASES[measure]], denominator, numerator)
        elif measure == "model_flop_limit":
            if variants[numerator]["model_flops"]:  # counted on CPU only
                ratios[name] = variants[denominator]["model_flops"] / variants[numerator]["model_flops"]
        else:
            ratios[name] = variants[numerator][measure] / variants[denominator][measure]
    return ratios


def check_targets(ratios: dict[str, float]) -> dict[str, bool]:
    met = {}
    for name, (_, _, _, bound, kind) in RATIOS.items():
        if bound is not None and name in ratios:
            met[name] = ratios[name] >= bound if kind == "min" else ratios[name] <= bound
    return met


def bench_backbone(setup: Setup, rounds: int) -> dict:
    # memory first: its workers must not run beside the timed steps
    memory = measure_all_memory(setup)
    samples, params, flops = time_all(setup, rounds)
    tokens = setup.batch * setup.seq_len
    variants = {
        v: {
            "tokens_per_s": tokens / min(samples["step"][v]),
            **memory[v],
            "params": params[v],
            "model_flops": flops[v],
            "seconds_best": min(samples["step"][v]),
            "seconds_median": statistics.median(samples["step"][v]),
            "seconds_per_round": samples["step"][v],
            "model_seconds_per_round": samples["model"][v],
            "optimizer_seconds_per_round": samples["optimizer"][v],
            "inference_tokens_per_s": tokens / min(samples["inference"][v]),
            "inference_seconds_per_round": samples["inference"][v],
            "optimizer_share": statistics.median(
                o / s for o, s in zip(samples["optimizer"][v], samples["step"][v], strict=True)
            ),
        }
        for v in setup.variants
    }
    ratios = ratios_of(samples, variants)
    return {
        "weights": weights_of(setup, to_container(variant_config(setup.backbone, "ffn").backbone)),
        "seq_len": setup.seq_len,
        "batch": setup.batch,
        "tokens": tokens,
        "threads": setup.threads,
        "torch": torch.__version__,
        "variants": variants,
        "ratios": ratios,
        "targets_met": check_targets(ratios),
    }


def print_backbone(console: Console, name: str, result: dict) -> None:
    table = Table(
        title=f"{name} ({result['weights']}): batch {result['batch']} x {result['seq_len']} tokens, "
        f"{result['threads']} threads"
    )
    for column in ("variant", "params M", "tokens/s", "over ffn", "optimizer share", "peak MB", "step MB"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    ffn = result["variants"].get("ffn", {}).get("tokens_per_s")
    for variant, row in result["variants"].items():
        table.add_row(
            variant,
            f"{row['params'] / 1e6:.1f}",
            f"{row['tokens_per_s']:.0f}",
            f"{row['tokens_per_s'] / ffn:.3f}" if ffn else "-",
            f"{row['optimizer_share']:.1%}",
            f"{row['peak_mem_mb']:.0f}",
            f"{row['step_mem_mb']:.0f}",
        )
    console.print(table)
    for ratio, value in result["ratios"].items():
        verdict = {True: "meets target", False: "MISSES target"}.get(result["targets_met"].get(ratio), "")
        console.print(f"  {ratio:36s} {value:7.3f}  {verdict}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", choices=list(BACKBONES), help="default: minilm gpt2_tiny")
    parser.add_argument("--batch", type=int, help="default: the backbone's recipe (minilm 16, gpt2_tiny 8)")
    parser.add_argument("--seq-len", type=int, help="default: the backbone's (minilm 128, gpt2_tiny 256)")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="default: all; ratios need both"
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast, as bf16-mixed")
    parser.add_argument("--threads", type=int, help="torch threads; default: torch's (one per core)")
    parser.add_argument(
        "--random-weights", action="store_true", help="MiniLM's published architecture, randomly initialised"
    )
    parser.add_argument("--quick", action="store_true", help="tiny backbones and shapes, 2 rounds: checks it runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.backbones = args.backbones or ["bert_tiny", "gpt2_tiny"]
        # one thread: on a busy machine, tiny steps with two threads spend most of their time
        # waiting at thread barriers (measured 20x slower)
        args.batch, args.seq_len, args.rounds, args.threads = 2, 32, 2, 1
    args.backbones = args.backbones or ["minilm", "gpt2_tiny"]
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = script_command("experiments/bench_train.py", argv)
    revision = git_revision()  # before the first write: an --out outside RESULTS_DIR would make it +dirty
    console = Console()
    results, failures = {}, {}
    for backbone in args.backbones:
        batch, seq_len = default_shape(backbone)
        shape = (args.batch or batch, args.seq_len or seq_len)
        setup = Setup(
            backbone,
            *shape,
            args.device,
            args.dtype,
            torch.get_num_threads(),
            tuple(args.variants),
            args.random_weights,
        )
        try:
            results[backbone] = bench_backbone(setup, args.rounds)
            print_backbone(console, backbone, results[backbone])
        except Exception as error:  # a backbone that fails (out of memory, say) leaves the next ones to run
            failures[backbone] = record_failure(console, backbone, error, args.device)
        report = build_report(args, command, revision, results, failures)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # after every backbone: a cut run keeps them
    console.print(f"wrote {args.out}")
    if failures:
        raise SystemExit(f"{len(failures)} of {len(args.backbones)} backbones failed (their errors are in the report)")
    return report


def build_report(
    args: argparse.Namespace, command: str, revision: str, results: dict[str, dict], failures: dict[str, str]
) -> dict:
    return {
        "benchmark": (
            "whole-model training step (forward, loss + aux losses, backward, clipping, fused AdamW); "
            "variants alternated in one process; tokens_per_s: best round; throughput ratios: median over "
            "rounds of the ratio within a round, of the whole step or (model_throughput) of zero_grad, "
            "forward and backward alone, or (inference_throughput) of a forward in eval mode without "
            "autograd on the same batch; optimizer_share: median over rounds of the optimizer's (clipping, "
            "AdamW) share of the step; memory: fresh process per variant (CPU: peak RSS)"
        ),
        "device": args.device,
        "dtype": args.dtype,
        "machine": machine_name(args.device),
        "git": revision,
        "command": command,
        "rounds": args.rounds,
        "complete": len(results) == len(args.backbones),
        "backbones_planned": args.backbones,
        "failures": failures,
        "targets": {
            name: {"numerator": a, "denominator": b, "measure": m, "bound": bound, "kind": kind}
            for name, (a, b, m, bound, kind) in RATIOS.items()
            if bound is not None
        },
        "backbones": results,
    }


if __name__ == "__main__":
    main()
