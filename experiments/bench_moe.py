"""Forward+backward time of every MoE variant on CPU, as ratios to baselines timed alongside.

Candidates are timed alternately in one process (round-robin, order reversed every other
round) after a warm-up; each ratio is the median over rounds of the two candidates' times
in the same round. These machines are shared and noisy: only ratios measured together
mean anything.

    python experiments/bench_moe.py             # paper shapes, writes experiments/results/bench_moe.json
    python experiments/bench_moe.py --quick     # tiny shapes, to check the script runs

Experts are Switch-shaped (ReLU, no bias) so the comparison with transformers'
SwitchTransformersSparseMLP runs the same FFN.
"""

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from hypermoe.moe import FFN, DenseMoE, HyperMoE, HyperNetwork, TopKAdapterMoE, TopKMoE

RESULTS = Path(__file__).resolve().parent / "results" / "bench_moe.json"


def hf_switch(d_model: int, d_ff: int, num_experts: int, seq_len: int) -> nn.Module:
    """transformers' Switch MoE block with dropless capacity and no jitter or dropout."""
    from transformers import SwitchTransformersConfig
    from transformers.models.switch_transformers.modeling_switch_transformers import SwitchTransformersSparseMLP

    config = SwitchTransformersConfig(
        d_model=d_model,
        d_ff=d_ff,
        num_experts=num_experts,
        expert_capacity=seq_len,  # capacity is counted per sequence: this is dropless
        router_jitter_noise=0.0,
        dropout_rate=0.0,
    )
    return SwitchTransformersSparseMLP(config)


def build_candidates(d_model: int, d_ff: int, num_experts: int, top_k: int, seq_len: int) -> dict[str, nn.Module]:
    shape = {"d_model": d_model, "d_ff": d_ff, "activation": "relu", "bias": False}
    routed = {**shape, "num_experts": num_experts, "top_k": top_k}
    hyper = {"hypernetwork": HyperNetwork(d_model, 1), "layer_index": 0}
    fast = HyperMoE(**routed, **hyper, generation="per_set")
    reference = HyperMoE(**routed, **hyper, generation="per_token")
    reference.load_state_dict(fast.state_dict())
    candidates = {
        "ffn": FFN(**shape),
        "topk": TopKMoE(**routed),
        "hypermoe": fast,
        "hypermoe_pertoken": reference,
        # same width b as the HyperExpert: the cost of a static adapter (a parameter-matched
        # one is wider, see param_matched_bottleneck)
        "topk_adapter": TopKAdapterMoE(**routed, adapter_bottleneck=fast.hypernetwork.bottleneck),
        "dense_moe": DenseMoE(**shape, num_experts=num_experts),
    }
    if top_k == 1:
        candidates["hf_switch"] = same_weights_as(hf_switch(d_model, d_ff, num_experts, seq_len), candidates["topk"])
    return candidates


@torch.no_grad()
def same_weights_as(hf: nn.Module, ours: TopKMoE) -> nn.Module:
    """Give transformers' layer our router and expert weights: both route identically."""
    hf.router.classifier.weight.copy_(ours.router.weight)
    for i, expert in enumerate(ours.experts.ffns):
        hf.experts[f"expert_{i}"].wi.weight.copy_(expert.fc_in.weight)
        hf.experts[f"expert_{i}"].wo.weight.copy_(expert.fc_out.weight)
    return hf


def step(layer: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).sum().backward()

    return run


def time_alternately(runs: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Seconds of every run in every round; the order is reversed every other round."""
    for run in runs.values():
        run()  # warm-up: allocator, thread pools, lazy inits
    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            runs[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def paired_ratio(samples: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of numerator / denominator timed in the same round: pairing cancels
    the slow drifts of a shared machine, the median its bursts."""
    return statistics.median(a / b for a, b in zip(samples[numerator], samples[denominator], strict=True))


def bench_case(d_model: int, d_ff: int, num_experts: int, top_k: int, batch: int, seq_len: int, rounds: int) -> dict:
    torch.manual_seed(0)
    candidates = build_candidates(d_model, d_ff, num_experts, top_k, seq_len)
    for layer in candidates.values():
        layer.train()
    x = torch.randn(batch, seq_len, d_model, requires_grad=True)
    runs = {name: step(layer, x) for name, layer in candidates.items()}
    # The two slow candidates (several GB of per-token weights, 8 experts on every token)
    # would evict caches and churn the allocator between the fast ones: they get their own
    # alternation with their baselines, and fewer rounds.
    slow = {"hypermoe_pertoken": "hypermoe", "dense_moe": "ffn"}
    fast = {name: run for name, run in runs.items() if name not in slow}
    samples = time_alternately(fast, rounds)
    for name, baseline in slow.items():
        paired = time_alternately({name: runs[name], baseline: runs[baseline]}, max(2, rounds // 3))
        samples[name] = paired[name]
        samples[f"{baseline}_beside_{name}"] = paired[baseline]
    pairs = {
        "topk_over_ffn": ("topk", "ffn"),
        "hypermoe_over_topk": ("hypermoe", "topk"),
        "hypermoe_pertoken_over_hypermoe": ("hypermoe_pertoken", "hypermoe_beside_hypermoe_pertoken"),
        "topk_adapter_over_topk": ("topk_adapter", "topk"),
        "dense_moe_over_ffn": ("dense_moe", "ffn_beside_dense_moe"),
        "topk_over_hf_switch": ("topk", "hf_switch"),
    }
    ratios = {name: paired_ratio(samples, a, b) for name, (a, b) in pairs.items() if b in samples}
    return {
        "d_model": d_model,
        "d_ff": d_ff,
        "num_experts": num_experts,
        "top_k": top_k,
        "tokens": batch * seq_len,
        "batch": batch,
        "seq_len": seq_len,
        "seconds_fwd_bwd": {name: min(times) for name, times in samples.items()},
        "seconds_fwd_bwd_median": {name: statistics.median(times) for name, times in samples.items()},
        "ratios": ratios,
    }


TARGETS = {  # ratio -> (bound, top_k it applies to, "max" or "min")
    "topk_over_ffn": (1.15, 1, "max"),
    "hypermoe_over_topk": (1.08, None, "max"),
    "hypermoe_pertoken_over_hypermoe": (4.0, None, "min"),
    "topk_over_hf_switch": (0.9, 1, "max"),
}


def check_targets(case: dict) -> dict[str, bool]:
    met = {}
    for name, (bound, top_k, kind) in TARGETS.items():
        if name in case["ratios"] and top_k in (None, case["top_k"]):
            value = case["ratios"][name]
            met[name] = value <= bound if kind == "max" else value >= bound
    return met


def print_case(console: Console, case: dict) -> None:
    table = Table(title=f"top-{case['top_k']}, {case['tokens']} tokens, d={case['d_model']}, N={case['num_experts']}")
    table.add_column("variant")
    table.add_column("fwd+bwd s", justify="right")
    table.add_column("over ffn", justify="right")
    ffn = case["seconds_fwd_bwd"]["ffn"]
    for name, seconds in case["seconds_fwd_bwd"].items():
        if "_beside_" not in name:  # baselines re-timed next to a slow candidate
            table.add_row(name, f"{seconds:.4f}", f"{seconds / ffn:.3f}")
    console.print(table)
    for name, value in case["ratios"].items():
        verdict = {True: "meets target", False: "MISSES target"}.get(case["targets_met"].get(name), "")
        console.print(f"  {name:34s} {value:7.3f}  {verdict}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--d-ff", type=int, default=3072)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--top-k", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny shapes and 2 rounds: checks the script runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.d_model, args.d_ff, args.batch, args.seq_len, args.rounds = 32, 64, 2, 16, 2

    console = Console()
    cases = []
    for top_k in args.top_k:
        case = bench_case(args.d_model, args.d_ff, args.experts, top_k, args.batch, args.seq_len, args.rounds)
        case["targets_met"] = check_targets(case)
        print_case(console, case)
        cases.append(case)
    report = {
        "benchmark": (
            "MoE layer forward+backward, float32, CPU; candidates alternated in one process; "
            "seconds: best round; ratios: median over rounds of the ratio within a round"
        ),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "rounds": args.rounds,
        "targets": {name: {"bound": b, "top_k": k, "kind": kind} for name, (b, k, kind) in TARGETS.items()},
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
