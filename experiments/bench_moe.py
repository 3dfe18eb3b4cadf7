"""Forward and forward+backward time of every MoE variant on CPU, as ratios to baselines timed alongside.

Each case (top-k x d_model x tokens, d_ff = 4 d_model, N experts) builds every candidate and
times it alternately in one process (round-robin, order reversed every other round) after a
warm-up. One visit of a candidate times a forward alone (training mode, grad enabled: the cost of
a training forward, graph freed untimed, no backward), then a forward+backward. Each ratio is the
median over rounds of the two candidates' times in the same round, per mode. These machines are
shared and noisy: only ratios measured together mean anything.

    python experiments/bench_moe.py             # 12 cases, writes experiments/results/bench_moe.{json,md}
    python experiments/bench_moe.py --d-model 384 --tokens 512 2048 --top-k 1 --rounds 3 --out bench_moe_small.json
    python experiments/bench_moe.py --quick     # tiny shapes, 1 thread, every code path, a few seconds

Tokens are batch x seq_len with seq_len = min(--seq-len, tokens). Per-token scaling compares the
best-round forward+backward seconds per token at the two largest token counts (not timed together,
so noisier than the ratios). The JSON ends with `summary`: every target, its worst value over the
cases, met or missed; the Markdown beside it tabulates the cases and that summary.

``hypermoe`` generates its HyperExperts in every step, as a layer alone does; ``hypermoe_pregenerated``
is the same layer handed them, generated beforehand: what it costs in a stack, where one hypernetwork
call per forward generates every layer's (the two ratios to ``topk`` bracket a stack's per-layer cost).

Experts are Switch-shaped (ReLU, no bias) so the comparison with transformers'
SwitchTransformersSparseMLP runs the same FFN.
"""

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import _this_checkout  # noqa: F401  (first: this checkout's hypermoe, not an installed one)
import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hypermoe.config import PROJECT_ROOT, RESULTS_DIR, git_revision, script_command
from hypermoe.moe import (
    FFN,
    DenseMoE,
    DenseMoESettings,
    HyperMoE,
    HyperMoESettings,
    HyperNetwork,
    TopKAdapterMoE,
    TopKAdapterSettings,
    TopKMoE,
    TopKSettings,
)
from hypermoe.moe.grouped import grouped_ffn_mm, resolve_kernel
from hypermoe.moe.hyper import GeneratedAdapter, generate_every_set

RESULTS = PROJECT_ROOT / RESULTS_DIR / "bench_moe.json"
MODES = ("fwd", "fwd_bwd")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Slow candidate -> the baseline re-timed beside it. Several GB of per-token weights, or 8 experts
# on every token, would evict caches and churn the allocator between the fast candidates: they get
# their own alternation with their baseline, and fewer rounds.
SLOW = {"hypermoe_pertoken": "hypermoe", "dense_moe": "ffn"}
PAIRS = {  # ratio -> (numerator, denominator), both timed in the same alternation
    "topk_over_ffn": ("topk", "ffn"),
    "hypermoe_over_topk": ("hypermoe", "topk"),
    "hypermoe_pregenerated_over_topk": ("hypermoe_pregenerated", "topk"),
    "hypermoe_pertoken_over_hypermoe": ("hypermoe_pertoken", "hypermoe_beside_hypermoe_pertoken"),
    "topk_adapter_over_topk": ("topk_adapter", "topk"),
    "dense_moe_over_ffn": ("dense_moe", "ffn_beside_dense_moe"),
    "topk_over_hf_switch": ("topk", "hf_switch"),
}
SCALED = ("topk", "hypermoe")  # candidates whose per-token cost must stay flat as tokens grow
SCALING_BOUND = 1.10


@dataclass(frozen=True)
class Target:
    """A bound on one ratio in one mode, for one top_k (None: every top_k)."""

    ratio: str
    mode: str
    kind: str  # "max": value <= bound; "min": value >= bound
    bound: float
    top_k: int | None = None
    min_tokens: int = 0  # below it the hypernetwork's fixed cost per forward is a large share by design

    @property
    def name(self) -> str:
        return f"{self.ratio}_{self.mode}"

    @property
    def label(self) -> str:
        return self.name if self.top_k is None else f"{self.name} (top-{self.top_k})"

    def met(self, value: float) -> bool:
        return value <= self.bound if self.kind == "max" else value >= self.bound


CPU_TARGETS = (  # on CPU, fp32
    Target("topk_over_ffn", "fwd_bwd", "max", 1.12, top_k=1),
    Target("topk_over_ffn", "fwd_bwd", "max", 2.2, top_k=2),
    Target("hypermoe_over_topk", "fwd", "max", 1.08, min_tokens=2048),
    Target("hypermoe_over_topk", "fwd_bwd", "max", 1.08, min_tokens=2048),
    Target("hypermoe_pertoken_over_hypermoe", "fwd_bwd", "min", 4.0),
    Target("topk_over_hf_switch", "fwd_bwd", "max", 0.9, top_k=1),
)
GPU_TARGETS = (  # on an H200 in bf16
    Target("topk_over_ffn", "fwd_bwd", "max", 1.25, top_k=1),
    Target("hypermoe_over_topk", "fwd_bwd", "max", 1.08),
)


def targets_for(device: str) -> tuple[Target, ...]:
    return GPU_TARGETS if device == "cuda" else CPU_TARGETS


@dataclass(frozen=True)
class Case:
    d_model: int
    num_experts: int
    top_k: int
    batch: int
    seq_len: int

    @property
    def d_ff(self) -> int:
        return 4 * self.d_model

    @property
    def tokens(self) -> int:
        return self.batch * self.seq_len


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


class Pregenerated(nn.Module):
    """A HyperMoE layer handed its HyperExperts for every possible set, as a stack hands each
    layer its share of one hypernetwork call (``generate_every_set``): the layer's own cost in a
    stack, without its share of that call. ``hypermoe`` minus this is what generating per layer
    costs. The HyperExperts are generated once, at the first call (on the device and in the dtype
    the case runs in), as leaves that require grad: backward still computes their gradients, as a
    stack's layer does before handing them to the one generation's backward."""

    def __init__(self, layer: HyperMoE):
        super().__init__()
        self.layer = layer
        self.every_set: GeneratedAdapter | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.every_set is None:
            generated = generate_every_set([self.layer])[self.layer]
            self.every_set = GeneratedAdapter(*(t.detach().requires_grad_() for t in vars(generated).values()))
        for tensor in vars(self.every_set).values():
            tensor.grad = None  # as zero_grad does for the other candidates' parameters
        return self.layer(x, hyper_experts=self.every_set)


def build_candidates(case: Case, pertoken: bool) -> dict[str, nn.Module]:
    shape = {"d_model": case.d_model, "d_ff": case.d_ff, "activation": "relu", "bias": False}
    routed = {"num_experts": case.num_experts, "top_k": case.top_k}
    hyper = {"hypernetwork": HyperNetwork(case.d_model, 1), "layer_index": 0}
    fast = HyperMoE(HyperMoESettings(**routed, generation="per_set"), **shape, **hyper)
    candidates = {
        "ffn": FFN(**shape),
        "topk": TopKMoE(TopKSettings(**routed), **shape),
        "hypermoe": fast,
        "hypermoe_pregenerated": Pregenerated(fast),
        # same width b as the HyperExpert: the cost of a static adapter (a parameter-matched
        # one is wider, see param_matched_bottleneck)
        "topk_adapter": TopKAdapterMoE(
            TopKAdapterSettings(**routed, adapter_bottleneck=fast.hypernetwork.bottleneck), **shape
        ),
        "dense_moe": DenseMoE(DenseMoESettings(num_experts=case.num_experts), **shape),
    }
    if pertoken:
        reference = HyperMoE(HyperMoESettings(**routed, generation="per_token"), **shape, **hyper)
        reference.load_state_dict(fast.state_dict())
        candidates["hypermoe_pertoken"] = reference
    if case.top_k == 1:
        switch = hf_switch(case.d_model, case.d_ff, case.num_experts, case.seq_len)
        candidates["hf_switch"] = same_weights_as(switch, candidates["topk"])
    return candidates


@torch.no_grad()
def same_weights_as(hf: nn.Module, ours: TopKMoE) -> nn.Module:
    """Give transformers' layer our router and expert weights: both route identically."""
    hf.router.classifier.weight.copy_(ours.router.weight)
    for i, expert in enumerate(ours.experts.ffns):
        hf.experts[f"expert_{i}"].wi.weight.copy_(expert.fc_in.weight)
        hf.experts[f"expert_{i}"].wo.weight.copy_(expert.fc_out.weight)
    return hf


def pertoken_gigabytes(case: Case, bottleneck: int) -> float:
    """Size of the adapters the per-token reference generates in one forward (W_down, W_up, biases)."""
    per_token = 2 * case.d_model * bottleneck + bottleneck + case.d_model
    return case.tokens * per_token * 4 / 1e9


Visit = Callable[[], dict[str, float]]


def visit(layer: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> Visit:
    """One forward alone, then one forward+backward: seconds of each, by mode. Under bf16 the
    layer runs in autocast, as mixed-precision training runs it; on CUDA the clock stops
    after the device finishes."""
    device = x.device.type
    finish = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    autocast = {"device_type": device, "dtype": dtype, "enabled": dtype != torch.float32}

    def run() -> dict[str, float]:
        finish()
        start = time.perf_counter()
        with torch.autocast(**autocast):
            out = layer(x)  # grad enabled, as in training: this forward builds the autograd graph
        finish()
        fwd = time.perf_counter() - start
        del out  # frees the graph, untimed: a training step frees it in backward
        layer.zero_grad(set_to_none=True)
        x.grad = None
        finish()
        start = time.perf_counter()
        with torch.autocast(**autocast):
            out = layer(x)
        out.float().sum().backward()
        finish()
        return {"fwd": fwd, "fwd_bwd": time.perf_counter() - start}

    return run


def time_alternately(runs: dict[str, Visit], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Seconds of every run in every round, by mode; the order is reversed every other round."""
    for run in runs.values():
        run()  # warm-up: allocator, thread pools, lazy inits
    samples: dict[str, dict[str, list[float]]] = {}  # by whatever modes the visits report
    names = list(runs)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            for mode, seconds in runs[name]().items():
                samples.setdefault(mode, {each: [] for each in names})[name].append(seconds)
    return samples


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs of one call of ``run`` (a forward, a backward, or a model pass of both), as torch's
    FlopCounterMode counts them: matmuls, convolutions and attention, the ops whose cost grows with
    the shapes; elementwise ops, gathers and the optimizer count nothing. CPU only: the counter has
    no formula for ``torch._grouped_mm``, the experts' kernel on CUDA, and would count their GEMMs
    as nothing."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def paired_ratio(samples: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of numerator / denominator timed in the same round: pairing cancels
    the slow drifts of a shared machine, the median its bursts."""
    return statistics.median(a / b for a, b in zip(samples[numerator], samples[denominator], strict=True))


def slow_rounds(rounds: int) -> int:
    return max(2, rounds // 3)


def time_candidates(
    candidates: dict[str, nn.Module], x: torch.Tensor, rounds: int, dtype: torch.dtype
) -> dict[str, dict[str, list[float]]]:
    runs = {name: visit(layer, x, dtype) for name, layer in candidates.items()}
    samples = time_alternately({name: run for name, run in runs.items() if name not in SLOW}, rounds)
    for name, baseline in SLOW.items():
        if name in runs:
            paired = time_alternately({name: runs[name], baseline: runs[baseline]}, slow_rounds(rounds))
            for mode in MODES:
                samples[mode][name] = paired[mode][name]
                samples[mode][f"{baseline}_beside_{name}"] = paired[mode][baseline]
    return samples


def ratios(samples: dict[str, list[float]]) -> dict[str, float]:
    present = {name: pair for name, pair in PAIRS.items() if set(pair) <= set(samples)}
    return {name: paired_ratio(samples, a, b) for name, (a, b) in present.items()}


def bench_case(case: Case, rounds: int, pertoken_max_tokens: int, device: str, dtype: torch.dtype) -> dict:
    torch.manual_seed(0)
    pertoken = case.tokens <= pertoken_max_tokens
    candidates = build_candidates(case, pertoken)
    skipped = {}
    if not pertoken:
        gigabytes = pertoken_gigabytes(case, candidates["hypermoe"].hypernetwork.bottleneck)
        skipped["hypermoe_pertoken"] = (
            f"over {pertoken_max_tokens} tokens: its per-token adapters alone take {gigabytes:.2f} GB per forward"
        )
    for layer in candidates.values():
        layer.train().to(device)
    x = torch.randn(case.batch, case.seq_len, case.d_model, device=device, requires_grad=True)
    samples = time_candidates(candidates, x, rounds, dtype)
    result = {
        "d_model": case.d_model,
        "d_ff": case.d_ff,
        "num_experts": case.num_experts,
        "top_k": case.top_k,
        "tokens": case.tokens,
        "batch": case.batch,
        "seq_len": case.seq_len,
        "device": device,
        "skipped": skipped,
    }
    for mode in MODES:
        result[f"seconds_{mode}"] = {name: min(times) for name, times in samples[mode].items()}
        result[f"seconds_{mode}_median"] = {name: statistics.median(times) for name, times in samples[mode].items()}
    result.update({f"ratios_{mode}": ratios(samples[mode]) for mode in MODES})
    result["flop_limit"] = {"hypermoe_over_topk": hypermoe_flop_limit(candidates["hypermoe"], case.tokens)}
    result["targets_met"] = check_targets(result)
    result["expert_gemms"] = gemm_efficiency(candidates["topk"], x.detach(), dtype, rounds)
    return result


def hypermoe_flop_limit(layer: HyperMoE, tokens: int) -> float:
    """HyperMoE's multiply-adds over topk's, counted from the shapes: the ratio its time would
    have if every multiply-add cost the same. Both route each token (d x N) and run it through k
    expert FFNs (2 d f each); HyperMoE adds per token its HyperExpert (d -> r -> d), and per
    generated set (at most C(N, k), at most one per token) every Linear weight of the selection
    MLP and the hypernetwork once. Backward doubles both sides, so one ratio holds for fwd and
    fwd+bwd."""
    d, e, k = layer.d_model, layer.num_experts, layer.top_k
    d_ff = layer.experts.d_ff
    routed = tokens * (d * e + k * 2 * d * d_ff)
    hyper_expert = tokens * 2 * d * layer.hypernetwork.bottleneck
    per_set = sum(m.weight.numel() for part in (layer.selection, layer.hypernetwork) for m in part.modules()
                  if isinstance(m, nn.Linear))  # fmt: skip
    sets = min(math.comb(e, k), tokens)
    return (routed + hyper_expert + sets * per_set) / routed


@torch.no_grad()
def gemm_efficiency(layer: TopKMoE, x: torch.Tensor, dtype: torch.dtype, rounds: int) -> dict[str, float]:
    """Achieved FLOP/s of the experts' two GEMMs (forward, uniform random routing, the kernel
    the layer would pick) as a fraction of the same GEMMs on one plain weight pair: what
    splitting the rows over experts costs. The grouped_mm kernel is timed twice: as the layer
    calls it (``tflops_experts``), stacking and casting every expert's weights on each call, and
    with those weights made beforehand (``tflops_kernel``, which ``fraction_of_plain`` compares,
    as the plain pair's weights are cast beforehand); ``weight_copy_share`` is the share of the
    layer's call that the copy takes. The per-expert loop copies nothing: the two are one."""
    tokens = x.reshape(-1, x.shape[-1])
    rows = tokens.shape[0] * layer.top_k
    experts = torch.randint(layer.num_experts, (rows,), device=x.device).sort().values
    counts = torch.bincount(experts, minlength=layer.num_experts)
    x_sorted = tokens.repeat(layer.top_k, 1).to(dtype)
    weights = layer.experts.ffns[0]
    w_in, w_out = weights.fc_in.weight.to(dtype), weights.fc_out.weight.to(dtype)
    if resolve_kernel(layer.kernel, x_sorted) == "loop":
        candidates = {"experts": partial(layer.experts, x_sorted, counts.tolist())}
    else:
        group_ends = counts.cumsum(0).to(torch.int32)
        ready = layer.experts.stacked_weights(dtype)
        kernel = partial(grouped_ffn_mm, x_sorted, group_ends, experts, **ready, activation=layer.experts.activation)
        candidates = {"experts": partial(layer.experts.forward_mm, x_sorted, group_ends, experts), "kernel": kernel}

    def plain() -> torch.Tensor:
        return torch.relu(x_sorted @ w_in.t()) @ w_out.t()

    finish = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    seconds = {}
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
        for name, run in {**candidates, "plain": plain}.items():
            run()  # warm-up
            times = []
            for _ in range(rounds):
                finish()
                start = time.perf_counter()
                run()
                finish()
                times.append(time.perf_counter() - start)
            seconds[name] = min(times)
    flops = 2 * 2 * rows * layer.experts.d_model * layer.experts.d_ff
    kernel_seconds = seconds.get("kernel", seconds["experts"])
    return {
        "tflops_experts": flops / seconds["experts"] / 1e12,
        "tflops_kernel": flops / kernel_seconds / 1e12,
        "tflops_plain": flops / seconds["plain"] / 1e12,
        "fraction_of_plain": seconds["plain"] / kernel_seconds,
        "weight_copy_share": 1 - kernel_seconds / seconds["experts"],  # 0 for the loop, which copies nothing
    }


def applicable(case: dict) -> list[Target]:
    """Targets for this case's top_k whose ratio was measured."""
    targets = targets_for(case["device"])
    return [
        t
        for t in targets
        if t.top_k in (None, case["top_k"]) and case["tokens"] >= t.min_tokens and t.ratio in case[f"ratios_{t.mode}"]
    ]


def check_targets(case: dict) -> dict[str, bool]:
    return {t.name: t.met(case[f"ratios_{t.mode}"][t.ratio]) for t in applicable(case)}


def case_label(case: dict) -> str:
    return f"top-{case['top_k']} d{case['d_model']} {case['tokens']} tokens"


def scaling(cases: list[dict], tokens: list[int]) -> dict:
    """Per (top_k, d_model) timed at both: seconds per token at the largest token count over that at
    the second largest, forward+backward best round. 1.0 is linear; above it, the layer is superlinear."""
    if len(set(tokens)) < 2:
        return {"tokens": [], "bound": SCALING_BOUND, "cases": [], "note": "needs two token counts"}
    small, large = sorted(set(tokens))[-2:]
    at = {(c["top_k"], c["d_model"], c["tokens"]): c for c in cases}
    entries = []
    timed_at_both = {(c["top_k"], c["d_model"]) for c in cases if c["tokens"] == large} & {
        (c["top_k"], c["d_model"]) for c in cases if c["tokens"] == small
    }
    for top_k, d_model in sorted(timed_at_both):
        per_token = {
            name: (at[top_k, d_model, large]["seconds_fwd_bwd"][name] / large)
            / (at[top_k, d_model, small]["seconds_fwd_bwd"][name] / small)
            for name in SCALED
        }
        entries.append(
            {
                "top_k": top_k,
                "d_model": d_model,
                "per_token_scaling": per_token,
                "targets_met": {name: value <= SCALING_BOUND for name, value in per_token.items()},
            }
        )
    return {"tokens": [small, large], "seconds": "fwd_bwd, best round", "bound": SCALING_BOUND, "cases": entries}


def summary_row(target: str, kind: str, bound: float, values: Iterable[tuple[float, str]]) -> dict:
    """The worst value over cases decides: a target is met only where every case meets it."""
    values = list(values)
    row = {"target": target, "kind": kind, "bound": bound, "cases": len(values)}
    if not values:
        return {**row, "worst": None, "worst_case": None, "met": None}  # no case of its top_k ran
    pick = max if kind == "max" else min
    worst, where = pick(values)
    met = worst <= bound if kind == "max" else worst >= bound
    return {**row, "worst": worst, "worst_case": where, "met": met}


def summarize(cases: list[dict], scaled: dict, device: str) -> list[dict]:
    rows = []
    for t in targets_for(device):
        values = ((c[f"ratios_{t.mode}"][t.ratio], case_label(c)) for c in cases if t in applicable(c))
        rows.append(summary_row(t.label, t.kind, t.bound, values))
    for name in SCALED:
        values = ((e["per_token_scaling"][name], f"top-{e['top_k']} d{e['d_model']}") for e in scaled["cases"])
        rows.append(summary_row(f"per_token_scaling_{name}_fwd_bwd", "max", SCALING_BOUND, values))
    return rows


def verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not measured"}[met]


def summary_cells(row: dict) -> list[str]:
    """bound, worst, where, verdict of a summary row, as printed and as written to Markdown."""
    bound = f"{'<=' if row['kind'] == 'max' else '>='} {row['bound']}"
    worst = "-" if row["worst"] is None else f"{row['worst']:.3f}"
    return [bound, worst, row["worst_case"] or "-", verdict(row["met"])]


def print_case(console: Console, case: dict) -> None:
    title = f"top-{case['top_k']}, {case['tokens']} tokens, d={case['d_model']}, N={case['num_experts']}"
    table = Table(title=title)
    for column in ("variant", "fwd s", "fwd+bwd s", "fwd+bwd over ffn"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    ffn = case["seconds_fwd_bwd"]["ffn"]
    for name, seconds in case["seconds_fwd_bwd"].items():
        if "_beside_" not in name:  # baselines re-timed next to a slow candidate
            table.add_row(name, f"{case['seconds_fwd'][name]:.4f}", f"{seconds:.4f}", f"{seconds / ffn:.3f}")
    console.print(table)
    met = case["targets_met"]
    for name, value in case["ratios_fwd_bwd"].items():
        fwd = case["ratios_fwd"][name]
        notes = [f"{mode} {verdict(met[f'{name}_{mode}'])}" for mode in MODES if f"{name}_{mode}" in met]
        console.print(f"  {name:34s} fwd {fwd:7.3f}  fwd+bwd {value:7.3f}  {', '.join(notes)}")
    console.print(f"  {'hypermoe_over_topk FLOP limit':34s} {case['flop_limit']['hypermoe_over_topk']:.3f}")
    for name, why in case["skipped"].items():
        console.print(f"  skipped {name}: {why}")


def print_summary(console: Console, summary: list[dict]) -> None:
    table = Table(title="targets: worst value over cases")
    table.add_column("target", overflow="fold")  # a narrow terminal wraps the names, never cuts them
    for column in ("bound", "worst", "where", "verdict"):
        table.add_column(column, justify="right" if column in ("bound", "worst") else "left")
    for row in summary:
        table.add_row(row["target"], *summary_cells(row))
    console.print(table)


MARKDOWN_RATIOS = (  # (ratio, mode) columns of the cases table
    ("topk_over_ffn", "fwd"),
    ("topk_over_ffn", "fwd_bwd"),
    ("hypermoe_over_topk", "fwd"),
    ("hypermoe_over_topk", "fwd_bwd"),
    ("hypermoe_pregenerated_over_topk", "fwd_bwd"),
    ("hypermoe_pertoken_over_hypermoe", "fwd_bwd"),
    ("topk_adapter_over_topk", "fwd_bwd"),
    ("dense_moe_over_ffn", "fwd_bwd"),
    ("topk_over_hf_switch", "fwd_bwd"),
)


def markdown(report: dict) -> str:
    header = ["top-k", "d_model", "tokens", "`hypermoe_over_topk` FLOP limit"]
    header += [f"`{ratio}` {mode}" for ratio, mode in MARKDOWN_RATIOS]
    lines = [
        "# MoE layer benchmark",
        "",
        f"{report['benchmark']}. {report['machine']}, torch {report['torch']}, {report['threads']} threads, "
        f"{report['rounds']} rounds ({report['slow_rounds']} for {', '.join(SLOW)}).",
        "",
        f"`{report['command']}` at `{report['git']}`.",
        "",
    ]
    if not report["complete"]:
        lines += [f"**Incomplete**: {len(report['cases'])} of {report['cases_planned']} cases ran.", ""]
    lines += [f"**Failed**: {f['case']}: {f['error']}" for f in report["failures"]]
    lines += [""] if report["failures"] else []
    lines += [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * 3 + "---:|" * (1 + len(MARKDOWN_RATIOS)),
    ]
    for case in report["cases"]:
        cells = [str(case["top_k"]), str(case["d_model"]), str(case["tokens"])]
        cells.append(f"{case['flop_limit']['hypermoe_over_topk']:.3f}")
        for ratio, mode in MARKDOWN_RATIOS:
            value = case[f"ratios_{mode}"].get(ratio)
            cells.append("-" if value is None else f"{value:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Targets (worst value over cases)", ""]
    if report["scaling"]["tokens"]:
        small, large = report["scaling"]["tokens"]
        lines += [f"`per_token_scaling`: seconds per token at {large} tokens / at {small} tokens.", ""]
    lines += ["| target | bound | worst | where | verdict |", "|---|---|---:|---|---|"]
    for row in report["summary"]:
        lines.append("| " + " | ".join([f"`{row['target']}`", *summary_cells(row)]) + " |")
    return "\n".join(lines) + "\n"


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (a size, a count), refused with a usage error otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def check_top_k(parser: argparse.ArgumentParser, top_k: Iterable[int], experts: int) -> None:
    for k in top_k:
        if k > experts:
            parser.error(f"--top-k {k} is more than --experts {experts}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=positive_int, nargs="+", default=[384, 768], help="d_ff = 4 d_model")
    parser.add_argument("--tokens", type=positive_int, nargs="+", default=[512, 2048, 8192], help="batch x seq_len")
    parser.add_argument("--top-k", type=positive_int, nargs="+", default=[1, 2])
    parser.add_argument("--seq-len", type=positive_int, default=512, help="longest sequence; also hf_switch's capacity")
    parser.add_argument("--experts", type=positive_int, default=8)
    parser.add_argument("--rounds", type=positive_int, default=10, help=f"{', '.join(SLOW)}: a third, at least 2")
    parser.add_argument("--pertoken-max-tokens", type=int, default=2048, help="skip hypermoe_pertoken above this")
    parser.add_argument("--threads", type=positive_int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: the GPU targets apply")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="bf16: autocast, as mixed precision")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and 2 rounds: checks every code path runs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON; the Markdown goes beside it (.md)")
    args = parser.parse_args(argv)
    if args.quick:  # the per-token limit sits between the two sizes so its skip path runs too
        args.d_model, args.tokens, args.seq_len, args.rounds, args.pertoken_max_tokens = [32], [32, 128], 16, 2, 32
        # on a busy machine, thread barriers make tiny ops 10-70x slower with 2 threads than with 1
        args.threads = 1
    for tokens in args.tokens:
        if tokens % min(args.seq_len, tokens):
            parser.error(f"--tokens {tokens} is not a multiple of --seq-len {args.seq_len}")
    check_top_k(parser, args.top_k, args.experts)
    return args


def grid(args: argparse.Namespace) -> list[Case]:
    cases = []
    for top_k in args.top_k:
        for d_model in args.d_model:
            for tokens in sorted(args.tokens):
                seq_len = min(args.seq_len, tokens)
                cases.append(Case(d_model, args.experts, top_k, tokens // seq_len, seq_len))
    return cases


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's thread count for the benchmark only: main() also runs inside the test process."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    command = script_command("experiments/bench_moe.py", argv)
    revision = git_revision()  # before the first write: an --out outside RESULTS_DIR would make it +dirty
    with torch_threads(args.threads):
        return run_benchmark(args, command, revision)


def run_benchmark(args: argparse.Namespace, command: str, revision: str) -> dict:
    console = Console()
    planned = grid(args)
    cases: list[dict] = []
    failures: list[dict] = []
    for case in planned:
        try:
            cases.append(bench_case(case, args.rounds, args.pertoken_max_tokens, args.device, DTYPES[args.dtype]))
            print_case(console, cases[-1])
        except Exception as error:  # a case that fails (out of memory, a kernel's refusal) leaves the next ones to run
            label = case_label({"top_k": case.top_k, "d_model": case.d_model, "tokens": case.tokens})
            failures.append({"case": label, "error": record_failure(console, label, error, args.device)})
        report = build_report(args, command, revision, cases, len(planned), failures)
        write_report(args.out, report)  # after every case: a run cut short keeps the cases it finished
    print_summary(console, report["summary"])
    console.print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    if failures:
        raise SystemExit(f"{len(failures)} of {len(planned)} cases failed (their errors are in the report)")
    return report


def record_failure(console: Console, what: str, error: Exception, device: str) -> str:
    """A failed case, backbone or model as its report records it (``Type: message``), printed;
    on CUDA the cache is emptied so that what the failure left allocated does not fail the next."""
    message = f"{type(error).__name__}: {error}"
    console.print(f"{what}: FAILED: {message}")
    if device == "cuda":
        torch.cuda.empty_cache()
    return message


def machine_name(device: str) -> str:
    """The GPU's name on CUDA; else the processor's model and the vector instructions torch's CPU
    kernels use on it. Timings, and which of two layouts wins, differ between processor models:
    a report must say which one made it."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_model()}, {torch.backends.cpu.get_cpu_capability()}"


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first processor's model name, family and model number from Linux's ``cpuinfo`` (a
    virtual machine may name only the vendor's line, as "AMD EPYC": the family and model tell
    its generations apart); elsewhere what ``platform`` says, at least the architecture."""
    fields = {}
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().split("\n\n")[0].splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    numbers = ", ".join(f"{key} {fields[key]}" for key in ("cpu family", "model") if key in fields)
    return f"{fields['model name']} ({numbers})" if numbers else fields["model name"]


def build_report(
    args: argparse.Namespace, command: str, revision: str, cases: list[dict], planned: int, failures: list[dict]
) -> dict:
    scaled = scaling(cases, args.tokens)
    return {
        "benchmark": (
            f"MoE layer forward (training mode, grad enabled, no backward) and forward+backward, {args.dtype}, "
            f"{args.device}; "
            "candidates alternated in one process; seconds: best round; ratios: median over rounds of the "
            "ratio within a round"
        ),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": machine_name(args.device),
        "device": args.device,
        "dtype": args.dtype,
        "git": revision,
        "command": command,
        "rounds": args.rounds,
        "slow_rounds": slow_rounds(args.rounds),
        "complete": len(cases) == planned,
        "cases_planned": planned,
        "failures": failures,
        "targets": [{"name": t.name, **vars(t)} for t in targets_for(args.device)],
        "cases": cases,
        "scaling": scaled,
        "summary": summarize(cases, scaled, args.device),
    }


def write_report(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))


if __name__ == "__main__":
    main()
