"""Greedy decoding time per new token of switch-base-8, topk against HyperMoE, at the paper's source length.

generate() runs the encoder once and then the decoder once per new token, on the same parameters.
HyperMoE's decoder can generate its HyperExperts on its first call and reuse them (what
``MoESeq2Seq.generate`` does, ``hyper_experts_kept``) or generate them at every call (transformers'
``generate`` on the bare model): the two are timed beside ``topk``, alternated in one process.
A visit generates 1 token and then 1 + ``--new-tokens`` tokens (greedy, that many exactly); the
difference over ``--new-tokens`` is one decoding step, the encoder and the first step left out.
Ratios are medians over rounds of the ratio within a round (bench_moe's ``paired_ratio``).
``hypermoe_over_hypermoe_every_call`` compares one model with itself; against ``topk``, a batch of
several sequences also differs in the experts its tokens reach at each step (each model routes, and
picks its tokens, its own way), which batch 1 (one expert per sparse block either way) leaves out.

    python experiments/bench_decode.py                      # writes experiments/results/bench_decode.{json,md}
    python experiments/bench_decode.py --tiny --rounds 1    # switch_tiny: checks the path in seconds

Weights: the pretrained ones where they load, else switch-base-8's published architecture with random
weights (as paper_dryrun.py builds it); inputs are random token ids at the full length, no padding.
"""

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _this_checkout  # noqa: F401  (first: this checkout's hypermoe, not an installed one)
import torch
from rich.console import Console
from rich.table import Table

from hypermoe.config import PROJECT_ROOT, RESULTS_DIR, git_revision, script_command

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # bench_moe and paper_dryrun are scripts beside this one (see bench_train.py)
    sys.path.insert(0, str(HERE))
from bench_moe import machine_name, paired_ratio, positive_int, time_alternately, torch_threads  # noqa: E402
from paper_dryrun import FAMILIES, TINY, Job, build_model  # noqa: E402

RESULTS = PROJECT_ROOT / RESULTS_DIR / "bench_decode.json"
FAMILY = "switch_base_8"
# candidate -> (variant built, whether it calls transformers' generate on the bare model, where HyperMoE's
# decoder generates its HyperExperts at every call, instead of MoESeq2Seq.generate, which keeps them)
CANDIDATES = {"topk": ("topk", False), "hypermoe": ("hypermoe", False), "hypermoe_every_call": ("hypermoe", True)}
RATIOS = {
    "hypermoe_over_topk": ("hypermoe", "topk"),
    "hypermoe_every_call_over_topk": ("hypermoe_every_call", "topk"),
    "hypermoe_over_hypermoe_every_call": ("hypermoe", "hypermoe_every_call"),
}


def decoding_visit(net: torch.nn.Module, bare: bool, batch: int, seq_len: int, new_tokens: int) -> Callable:
    """A visit for time_alternately: the seconds of one greedy decoding step of ``net`` (``bare``:
    through transformers' generate on its model) on a batch of random sources."""
    ids = torch.randint(net.model.config.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    generate = (lambda i, m, **kw: net.model.generate(input_ids=i, attention_mask=m, **kw)) if bare else net.generate

    def seconds_to(tokens: int) -> float:
        start = time.perf_counter()
        generate(ids, mask, max_new_tokens=tokens, min_new_tokens=tokens, num_beams=1)
        return time.perf_counter() - start

    def visit() -> dict[str, float]:
        with torch.inference_mode():
            first = seconds_to(1)
            return {"step": (seconds_to(1 + new_tokens) - first) / new_tokens}

    return visit


def bench_batch(nets: dict[str, torch.nn.Module], batch: int, seq_len: int, new_tokens: int, rounds: int) -> dict:
    visits = {
        name: decoding_visit(nets[variant], bare, batch, seq_len, new_tokens)
        for name, (variant, bare) in CANDIDATES.items()
    }
    seconds = time_alternately(visits, rounds)["step"]
    return {
        "batch": batch,
        "step_ms": {name: 1000 * statistics.median(values) for name, values in seconds.items()},
        "step_ms_per_round": {name: [1000 * s for s in values] for name, values in seconds.items()},
        "ratios": {ratio: paired_ratio(seconds, *pair) for ratio, pair in RATIOS.items()},
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Decoding step ({report['family']}, {report['weights']})",
        "",
        f"`{report['command']}` at `{report['git']}`, {report['machine']}, torch {report['torch']}, "
        f"{report['threads']} threads, source {report['seq_len']} tokens, {report['new_tokens']} new tokens timed, "
        f"{report['rounds']} rounds: {report['wall_seconds']:.0f} s, load average {report['load_average']:.1f} at the "
        f"end. {report['method']}",
        "",
        "| batch | " + " | ".join(f"{name} ms" for name in CANDIDATES) + " | " + " | ".join(RATIOS) + " |",
        "|---:" * (1 + len(CANDIDATES) + len(RATIOS)) + "|",
    ]
    for row in report["batches"]:
        times = " | ".join(f"{row['step_ms'][name]:.1f}" for name in CANDIDATES)
        ratios = " | ".join(f"{row['ratios'][ratio]:.3f}" for ratio in RATIOS)
        lines.append(f"| {row['batch']} | {times} | {ratios} |")
    return "\n".join(lines) + "\n"


def print_report(report: dict[str, Any]) -> None:
    table = Table(title=f"{report['family']}: one greedy decoding step, {report['threads']} threads")
    for column in ("batch", *CANDIDATES, *RATIOS):
        table.add_column(column, justify="right")
    for row in report["batches"]:
        table.add_row(
            str(row["batch"]),
            *(f"{row['step_ms'][name]:.1f} ms" for name in CANDIDATES),
            *(f"{row['ratios'][ratio]:.3f}" for ratio in RATIOS),
        )
    Console().print(table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--batches", type=positive_int, nargs="+", default=[8, 1], help="batch sizes (default: the paper's 8, and 1)"
    )
    parser.add_argument("--new-tokens", type=positive_int, default=16, help="decoding steps timed per visit")
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--random-weights", action="store_true", help="do not look for the pretrained weights")
    parser.add_argument("--tiny", action="store_true", help="switch_tiny at a short source: checks the path")
    parser.add_argument("--threads", type=positive_int, help="torch threads; default: torch's (one per core)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON report; the Markdown goes beside it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with torch_threads(args.threads):
        return bench(args, argv)


def bench(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    start = time.perf_counter()
    command = script_command("experiments/bench_decode.py", argv)
    revision = git_revision()  # before the first write: an --out outside RESULTS_DIR would make it +dirty
    threads = torch.get_num_threads()
    seq_len = (TINY if args.tiny else FAMILIES)[FAMILY].seq_len
    jobs = {
        variant: Job(
            family=FAMILY,
            variant=variant,
            tiny=args.tiny,
            device="cpu",
            dtype="fp32",
            batches=(2, 1),
            optimizer="step",
            random_weights=args.random_weights,
            threads=threads,
        )
        for variant in ("topk", "hypermoe")
    }
    built = {variant: build_model(job) for variant, job in jobs.items()}
    nets = {variant: model.net.eval() for variant, model in built.items()}
    report = {
        "benchmark": "one greedy decoding step (generate(1 + n) minus generate(1), over n), eval mode, inference_mode",
        "method": "Step times: median over rounds; ratios: median over rounds of the ratio within a round.",
        "family": FAMILY if not args.tiny else "switch_tiny",
        "weights": built["topk"].weights,
        "machine": machine_name("cpu"),
        "torch": torch.__version__,
        "threads": threads,
        "git": revision,
        "command": command,
        "seq_len": seq_len,
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "batches": [bench_batch(nets, batch, seq_len, args.new_tokens, args.rounds) for batch in args.batches],
        "wall_seconds": time.perf_counter() - start,
        "load_average": os.getloadavg()[0],  # the last minute's, this process's own threads included
    }
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return report


if __name__ == "__main__":
    main()
