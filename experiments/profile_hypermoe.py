"""Where a HyperMoE layer's time goes beyond topk's: the HyperExpert itself, and generating it.

Three measurements on one case (CPU, float32), each alternated in one process:
- the layer: training forward alone and forward+backward of ``topk``, ``hypermoe_pregenerated``
  (handed its HyperExperts, as a stack hands each layer its share of one generation) and
  ``hypermoe`` (generating its own), as ratios to topk (median over rounds of the in-round ratio);
- the generation alone: the layer's hypernetwork call for every possible set, forward and backward,
  with its gradients set to None before each step as ``optimizer.zero_grad`` does, and the minor page
  faults per step (Linux): the heads' fresh weight gradients that the allocator maps in again;
- the grouped bottleneck (the HyperExperts' two GEMMs) against the experts' grouped FFN, forward on
  the same sorted rows.
Each part's FLOP rate (torch's FlopCounterMode over the time) says how well its kernels run: the
generation's products have as many rows as there are sets (8 at top-1), a shape that GEMM
kernels run far below the experts' rate.

    python experiments/profile_hypermoe.py --threads 1        # d384, top-1, 2,048 tokens
    python experiments/profile_hypermoe.py --quick           # tiny shapes: checks the code paths

Pin it to a core nothing else runs on (``taskset -c 1``): these are the small differences.
"""

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _this_checkout  # noqa: F401  (first: this checkout's hypermoe, not an installed one)
import torch
from rich.console import Console

from hypermoe.config import git_revision, script_command
from hypermoe.moe.grouped import grouped_ffn
from hypermoe.moe.hyper import HyperMoE

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # bench_moe is a script beside this one (see bench_train.py)
    sys.path.insert(0, str(HERE))

from bench_moe import (  # noqa: E402
    Case,
    build_candidates,
    check_top_k,
    count_flops,
    machine_name,
    positive_int,
    time_alternately,
    torch_threads,
)

LAYERS = ("topk", "hypermoe_pregenerated", "hypermoe")


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def layer_visit(layer: torch.nn.Module, x: torch.Tensor) -> Callable[[], dict[str, float]]:
    def run() -> dict[str, float]:
        start = time.perf_counter()
        out = layer(x)
        fwd = time.perf_counter() - start
        del out
        layer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        layer(x).sum().backward()
        return {"fwd": fwd, "fwd_bwd": time.perf_counter() - start}

    return run


def generation_visit(layer: HyperMoE) -> Callable[[], dict[str, float]]:
    """Forward and backward of the layer's every-set generation, gradients from random cotangents."""
    with torch.no_grad():
        shapes = vars(layer.hypernetwork(layer.every_set_selection(), layer.layer_index))
    cotangents = [torch.randn_like(t) for t in shapes.values()]

    def run() -> dict[str, float]:
        layer.zero_grad(set_to_none=True)
        faults = _minor_faults()
        start = time.perf_counter()
        generated = layer.hypernetwork(layer.every_set_selection(), layer.layer_index)
        middle = time.perf_counter()
        torch.autograd.backward(list(vars(generated).values()), cotangents)
        end = time.perf_counter()
        return {"fwd": middle - start, "bwd": end - middle, "faults": float(_minor_faults() - faults)}

    return run


def equal_groups(rows: int, groups: int) -> list[int]:
    counts = [rows // groups] * groups
    counts[-1] += rows - sum(counts)
    return counts


def bottleneck_visits(layer: HyperMoE, tokens: int) -> dict[str, Callable[[], dict[str, float]]]:
    """Forward of the experts' grouped FFN on the top_k * tokens routed rows, split equally among
    the experts, and of the HyperExperts' grouped bottleneck on the tokens, split equally among the
    possible sets (C(N, k) of them)."""
    routed, rows = torch.randn(layer.top_k * tokens, layer.d_model), torch.randn(tokens, layer.d_model)
    expert_counts, set_counts = (
        equal_groups(len(routed), layer.num_experts),
        equal_groups(tokens, len(layer.set_experts)),
    )
    with torch.no_grad():
        adapters = layer.hypernetwork(layer.every_set_selection(), layer.layer_index)
    ffns = layer.experts.ffns
    w_in, w_out = [f.fc_in.weight for f in ffns], [f.fc_out.weight for f in ffns]

    def timed(fn: Callable[[], torch.Tensor]) -> Callable[[], dict[str, float]]:
        def run() -> dict[str, float]:
            with torch.no_grad():
                start = time.perf_counter()
                fn()
                return {"fwd": time.perf_counter() - start}

        return run

    return {
        "experts": timed(lambda: grouped_ffn(routed, expert_counts, w_in, None, w_out, None, "relu")),
        "bottleneck": timed(lambda: adapters.apply_grouped(rows, set_counts)),
    }


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def generation_flops(layer: HyperMoE) -> dict[str, int]:
    """FLOPs of the every-set generation's forward and of its backward (random cotangents)."""
    generated = {}

    def forward() -> None:
        generated.update(vars(layer.hypernetwork(layer.every_set_selection(), layer.layer_index)))

    fwd = count_flops(forward)
    outputs = list(generated.values())
    bwd = count_flops(lambda: torch.autograd.backward(outputs, [torch.randn_like(t) for t in outputs]))
    layer.zero_grad(set_to_none=True)
    return {"fwd": fwd, "bwd": bwd}


def gflop_per_s(flops: int, ms: float) -> float:
    return flops / ms / 1e6


def profile(case: Case, rounds: int) -> dict:
    torch.manual_seed(0)
    candidates = build_candidates(case, pertoken=False)
    layers = {name: candidates[name].train() for name in LAYERS}
    hyper: HyperMoE = candidates["hypermoe"]
    x = torch.randn(case.batch, case.seq_len, case.d_model, requires_grad=True)
    layer_times = time_alternately({name: layer_visit(layer, x) for name, layer in layers.items()}, rounds)
    generation = time_alternately({"generation": generation_visit(hyper)}, rounds)
    bottleneck_runs = bottleneck_visits(hyper, case.tokens)
    bottleneck = time_alternately(bottleneck_runs, rounds)
    ms = {
        mode: {name: 1e3 * statistics.median(s) for name, s in by_name.items()} for mode, by_name in layer_times.items()
    }
    generation_ms = {
        mode: 1e3 * statistics.median(s["generation"]) for mode, s in generation.items() if mode != "faults"
    }
    flops = generation_flops(hyper)
    experts_fwd_flops = count_flops(bottleneck_runs["experts"])
    bottleneck_ms = {name: 1e3 * statistics.median(s) for name, s in bottleneck["fwd"].items()}
    return {
        "case": vars(case),
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "layer_ms": ms,
        "layer_over_topk": {
            mode: {name: median_ratio(by_name[name], by_name["topk"]) for name in LAYERS[1:]}
            for mode, by_name in layer_times.items()
        },
        "generation_ms": generation_ms,
        "generation_faults_per_step": statistics.median(generation["faults"]["generation"]),
        "generation_over_topk_fwd_bwd": (generation_ms["fwd"] + generation_ms["bwd"]) / ms["fwd_bwd"]["topk"],
        "generation_flops": flops,
        "generation_gflop_per_s": {mode: gflop_per_s(flops[mode], generation_ms[mode]) for mode in flops},
        "bottleneck_fwd_ms": bottleneck_ms["bottleneck"],
        "experts_fwd_ms": bottleneck_ms["experts"],
        "experts_fwd_gflop_per_s": gflop_per_s(experts_fwd_flops, bottleneck_ms["experts"]),
        "bottleneck_over_experts_fwd": median_ratio(bottleneck["fwd"]["bottleneck"], bottleneck["fwd"]["experts"]),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=positive_int, default=384, help="d_ff = 4 d_model")
    parser.add_argument("--tokens", type=positive_int, default=2048)
    parser.add_argument("--seq-len", type=positive_int, default=512)
    parser.add_argument("--top-k", type=positive_int, default=1)
    parser.add_argument("--experts", type=positive_int, default=8)
    parser.add_argument("--rounds", type=positive_int, default=10)
    parser.add_argument("--threads", type=positive_int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 rounds, 1 thread")
    parser.add_argument("--out", type=Path, help="also write the report here (JSON)")
    args = parser.parse_args(argv)
    if args.quick:
        args.d_model, args.tokens, args.seq_len, args.rounds, args.threads = 32, 64, 32, 2, 1
    if args.tokens % min(args.seq_len, args.tokens):
        parser.error(f"--tokens {args.tokens} is not a multiple of --seq-len {args.seq_len}")
    check_top_k(parser, [args.top_k], args.experts)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    seq_len = min(args.seq_len, args.tokens)
    case = Case(args.d_model, args.experts, args.top_k, args.tokens // seq_len, seq_len)
    provenance = {
        "git": git_revision(),
        "command": script_command("experiments/profile_hypermoe.py", argv),
        "machine": machine_name("cpu"),
    }
    with torch_threads(args.threads):
        report = provenance | profile(case, args.rounds)
    Console().print_json(data=report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
