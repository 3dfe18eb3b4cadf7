"""The layer benchmark runs end to end on tiny shapes and writes every ratio, target, scaling and
summary consistently with its own seconds (timings themselves are not asserted)."""

import json
import math
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hypermoe.config import RESULTS_DIR, git_revision
from hypermoe.moe import HyperMoE, HyperMoESettings, HyperNetwork, TopKMoE, TopKSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import bench_moe
import profile_hypermoe


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    bench_moe.main(["--quick", "--out", str(out)])
    return json.loads(out.read_text()), out


def test_quick_grid_covers_every_case_and_skips_pertoken_above_its_limit(quick):
    report, _ = quick
    grid = [(c["top_k"], c["d_model"], c["tokens"]) for c in report["cases"]]
    assert grid == [(1, 32, 32), (1, 32, 128), (2, 32, 32), (2, 32, 128)]
    for case in report["cases"]:
        assert case["d_ff"] == 4 * case["d_model"] and case["batch"] * case["seq_len"] == case["tokens"]
        timed = set(case["seconds_fwd_bwd"])
        assert ("hf_switch" in timed) == (case["top_k"] == 1)
        # quick mode puts the per-token limit at 32 tokens so both paths run
        assert ("hypermoe_pertoken" in timed) == (case["tokens"] == 32)
        assert ("hypermoe_pertoken" in case["skipped"]) == (case["tokens"] > 32)


def test_ratios_match_the_seconds_timed_in_each_mode(quick):
    report, _ = quick
    for case in report["cases"]:
        assert set(case["seconds_fwd"]) == set(case["seconds_fwd_bwd"])
        for mode in bench_moe.MODES:
            seconds = case[f"seconds_{mode}"]
            assert all(s > 0 for s in seconds.values())
            assert all(case[f"seconds_{mode}_median"][name] >= s for name, s in seconds.items())
            measurable = {name for name, pair in bench_moe.PAIRS.items() if set(pair) <= set(seconds)}
            assert set(case[f"ratios_{mode}"]) == measurable
            assert all(r > 0 for r in case[f"ratios_{mode}"].values())
        assert {"topk_over_ffn", "hypermoe_over_topk", "hypermoe_pregenerated_over_topk"} <= set(case["ratios_fwd_bwd"])


def test_targets_met_follow_the_bounds(quick):
    report, _ = quick
    for case in report["cases"]:
        targets = [
            t for t in bench_moe.CPU_TARGETS if t.top_k in (None, case["top_k"]) and case["tokens"] >= t.min_tokens
        ]
        expected = {
            t.name: t.met(case[f"ratios_{t.mode}"][t.ratio]) for t in targets if t.ratio in case[f"ratios_{t.mode}"]
        }
        assert case["targets_met"] == expected
        assert all(isinstance(met, bool) for met in expected.values())
        # HyperMoE's bounds hold from 2,048 tokens: below, its hypernetwork's fixed cost dominates
        assert "hypermoe_over_topk_fwd" not in expected and "hypermoe_over_topk_fwd_bwd" not in expected
        assert ("topk_over_hf_switch_fwd_bwd" in expected) == (case["top_k"] == 1)
    top1_bounds = {t.bound for t in bench_moe.CPU_TARGETS if t.name == "topk_over_ffn_fwd_bwd"}
    assert top1_bounds == {1.12, 2.2}  # one bound per top-k
    hyper_bounds = {(t.bound, t.min_tokens) for t in bench_moe.CPU_TARGETS if t.ratio == "hypermoe_over_topk"}
    assert hyper_bounds == {(1.08, 2048)}


def test_the_flop_limit_counts_the_hyper_expert_and_the_hypernetwork_by_hand(quick):
    report, _ = quick
    for case in report["cases"]:
        d, f, e, k, n = case["d_model"], case["d_ff"], case["num_experts"], case["top_k"], case["tokens"]
        hypernetwork = bench_moe.HyperNetwork(d, 1)
        settings = bench_moe.HyperMoESettings(num_experts=e, top_k=k)
        layer = bench_moe.HyperMoE(
            settings, d_model=d, d_ff=f, activation="relu", bias=False, hypernetwork=hypernetwork, layer_index=0
        )
        r, h, s, l_dim, d_e = 64, 128, 128, 10, 128  # HypernetworkSettings' and HyperMoESettings' defaults
        assert (hypernetwork.bottleneck, settings.expert_embedding_dim) == (r, d_e)
        per_set = d_e * d_e + d_e * s + (s + l_dim) * h + h * (2 * d * r + r + d)
        topk = n * (d * e + k * 2 * d * f)
        expected = (topk + n * 2 * d * r + min(math.comb(e, k), n) * per_set) / topk
        assert bench_moe.hypermoe_flop_limit(layer, n) == pytest.approx(expected)
        assert case["flop_limit"]["hypermoe_over_topk"] == pytest.approx(expected)


def test_scaling_compares_seconds_per_token_at_the_two_largest_token_counts(quick):
    report, _ = quick
    scaling = report["scaling"]
    assert scaling["tokens"] == [32, 128]
    assert [(e["top_k"], e["d_model"]) for e in scaling["cases"]] == [(1, 32), (2, 32)]
    at = {(c["top_k"], c["tokens"]): c["seconds_fwd_bwd"] for c in report["cases"]}
    for entry in scaling["cases"]:
        for name in bench_moe.SCALED:
            expected = (at[entry["top_k"], 128][name] / 128) / (at[entry["top_k"], 32][name] / 32)
            assert entry["per_token_scaling"][name] == pytest.approx(expected)
            assert entry["targets_met"][name] == (expected <= bench_moe.SCALING_BOUND)


def test_summary_reports_the_worst_case_of_every_target(quick):
    report, _ = quick
    summary = {row["target"]: row for row in report["summary"]}
    assert len(summary) == len(bench_moe.CPU_TARGETS) + len(bench_moe.SCALED)
    for t in bench_moe.CPU_TARGETS:
        row = summary[t.label]
        # topk_over_ffn_fwd_bwd has one bound per top-k: only the cases of this target's top-k count
        cases = [c for c in report["cases"] if t.top_k in (None, c["top_k"]) and t.name in c["targets_met"]]
        values = [c[f"ratios_{t.mode}"][t.ratio] for c in cases]
        assert row["cases"] == len(values)
        if not values:  # HyperMoE's bounds start at 2,048 tokens, above quick mode's
            assert row["met"] is None and t.min_tokens > max(c["tokens"] for c in report["cases"])
            continue
        assert row["worst"] == (max(values) if t.kind == "max" else min(values))
        assert row["met"] == all(c["targets_met"][t.name] for c in cases)
    hyper = summary["per_token_scaling_hypermoe_fwd_bwd"]
    assert hyper["worst"] == max(e["per_token_scaling"]["hypermoe"] for e in report["scaling"]["cases"])


def test_summary_marks_targets_of_an_unmeasured_top_k():
    rows = bench_moe.summarize([], bench_moe.scaling([], [512]), "cpu")
    assert all(row["met"] is None and row["cases"] == 0 for row in rows)


def test_markdown_is_written_beside_the_json(quick):
    report, out = quick
    text = out.with_suffix(".md").read_text()
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| top-k |"))
    rows = [line for line in lines if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == len(report["cases"])
    assert all(len(row.split("|")) == len(header.split("|")) for row in rows)
    assert all(f"`{row['target']}`" in text for row in report["summary"])


def test_expert_gemm_efficiency_is_recorded_per_case(quick):
    report, _ = quick
    assert report["device"] == "cpu" and report["dtype"] == "fp32"
    for case in report["cases"]:
        gemms = case["expert_gemms"]
        assert gemms["tflops_experts"] > 0 and gemms["tflops_plain"] > 0
        # both time the same FLOPs, so the fraction is the ratio of their throughputs
        assert gemms["fraction_of_plain"] == pytest.approx(gemms["tflops_experts"] / gemms["tflops_plain"])


def test_a_run_cut_short_reports_the_cases_it_finished(quick):
    report, out = quick
    assert report["complete"] is True and report["cases_planned"] == len(report["cases"]) == 4
    partial = bench_moe.build_report(
        bench_moe.parse_args(["--quick"]), report["command"], report["git"], report["cases"][:1], planned=4, failures=[]
    )
    assert partial["complete"] is False and partial["cases"] == report["cases"][:1]
    assert partial["scaling"]["cases"] == []  # its one setting ran at one token count only
    assert "**Incomplete**: 1 of 4 cases ran." in bench_moe.markdown(partial)
    assert "Incomplete" not in out.with_suffix(".md").read_text()


def test_the_report_says_which_command_and_commit_made_it(quick):
    report, out = quick
    assert report["command"] == f"python experiments/bench_moe.py --quick --out {out}"
    assert report["git"] == git_revision() != "unknown"
    assert f"`{report['command']}` at `{report['git']}`." in out.with_suffix(".md").read_text()


def test_a_report_rewritten_by_the_run_before_does_not_make_the_revision_dirty(tmp_path):
    """``make bench`` runs two benchmarks from one tree: the first one's report must not mark
    the second one's code as changed; a change anywhere else must."""
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    (tmp_path / RESULTS_DIR).mkdir(parents=True)
    (tmp_path / RESULTS_DIR / "bench_moe.json").write_text("{}\n")
    (tmp_path / "train.py").write_text("\n")
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "code and a report"]):
        subprocess.run([*git, *command], cwd=tmp_path, check=True)
    commit = git_revision(tmp_path)
    assert len(commit) == 40
    (tmp_path / RESULTS_DIR / "bench_moe.json").write_text('{"rewritten": true}\n')
    (tmp_path / RESULTS_DIR / "bench_train.json").write_text("{}\n")
    assert git_revision(tmp_path) == commit
    (tmp_path / "train.py").write_text("# changed\n")
    assert git_revision(tmp_path) == commit + "+dirty"


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: fpu avx2

processor\t: 1
model name\t: another
"""


def test_the_report_names_the_processor_model_and_its_vector_instructions(quick, tmp_path):
    """Kernel choices, and so timings, differ between processor models: "x86_64" does not say
    which machine made a report."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    assert bench_moe.cpu_model(cpuinfo) == "AMD EPYC (cpu family 26, model 2)"
    assert bench_moe.cpu_model(tmp_path / "absent") == (platform.processor() or platform.machine())
    report, _ = quick
    assert report["machine"] == f"{bench_moe.cpu_model()}, {torch.backends.cpu.get_cpu_capability()}"
    assert report["machine"] in bench_moe.markdown(report)
    if Path("/proc/cpuinfo").is_file():
        assert report["machine"].split(",")[0] not in ("", "x86_64", "aarch64")


def test_bf16_autocast_runs(tmp_path):
    report = bench_moe.main(
        ["--quick", "--dtype", "bf16", "--tokens", "32", "--top-k", "1", "--out", str(tmp_path / "b.json")]
    )
    assert report["dtype"] == "bf16" and report["cases"][0]["ratios_fwd_bwd"]["hypermoe_over_topk"] > 0


def test_pregenerated_hypermoe_computes_the_layer_with_one_generation():
    torch.manual_seed(0)
    network = HyperNetwork(16, 1)
    shape = {"d_model": 16, "d_ff": 32, "activation": "relu", "bias": False}
    layer = HyperMoE(HyperMoESettings(num_experts=4, top_k=2), **shape, hypernetwork=network, layer_index=0)
    pregenerated = bench_moe.Pregenerated(layer)
    generations = []
    generate = network.generate
    network.generate = lambda *args: generations.append(1) or generate(*args)
    x = torch.randn(2, 8, 16)

    first = pregenerated(x)
    assert len(generations) == 1
    torch.testing.assert_close(first, layer(x))  # the same numbers as the layer generating its own
    first.sum().backward()
    assert all(t.grad is not None for t in vars(pregenerated.every_set).values())  # backward reaches them
    generations.clear()
    pregenerated(x)
    assert not generations  # later calls reuse the HyperExperts
    assert all(t.grad is None for t in vars(pregenerated.every_set).values())  # cleared, as zero_grad does


@pytest.mark.parametrize("top_k", ["1", "2"])  # top-2: C(N, 2) HyperExperts, two routed rows per token
def test_profile_splits_hypermoe_into_its_hyper_expert_and_its_generation(tmp_path, top_k):
    report = profile_hypermoe.main(["--quick", "--top-k", top_k, "--out", str(tmp_path / "p.json")])
    assert json.loads((tmp_path / "p.json").read_text()) == report
    assert (
        report["command"]
        == f"python experiments/profile_hypermoe.py --quick --top-k {top_k} --out {tmp_path / 'p.json'}"
    )
    assert report["git"] == git_revision() and report["machine"] == bench_moe.machine_name("cpu")
    for mode in ("fwd", "fwd_bwd"):
        assert set(report["layer_ms"][mode]) == set(profile_hypermoe.LAYERS)
        assert set(report["layer_over_topk"][mode]) == {"hypermoe_pregenerated", "hypermoe"}
        assert all(ratio > 0 for ratio in report["layer_over_topk"][mode].values())
    generation = report["generation_ms"]
    assert generation["fwd"] > 0 and generation["bwd"] > 0 and report["generation_faults_per_step"] >= 0
    assert report["generation_over_topk_fwd_bwd"] == pytest.approx(
        (generation["fwd"] + generation["bwd"]) / report["layer_ms"]["fwd_bwd"]["topk"]
    )
    # the two heads' products dominate (--quick: d 32, h 128, r 64): 2 FLOPs per weight and set forward,
    # twice that backward (input and weight gradients)
    heads = 2 * 2 * math.comb(8, int(top_k)) * 128 * 32 * 64
    flops = report["generation_flops"]
    assert heads < flops["fwd"] < 1.25 * heads and 2 * heads < flops["bwd"] < 2.5 * heads
    for mode in ("fwd", "bwd"):
        assert report["generation_gflop_per_s"][mode] == pytest.approx(flops[mode] / generation[mode] / 1e6)
    assert report["bottleneck_fwd_ms"] > 0 and report["experts_fwd_ms"] > 0
    experts_flops = 2 * int(top_k) * 64 * 2 * 32 * 128  # each routed row through d -> 4d -> d
    assert report["experts_fwd_gflop_per_s"] == pytest.approx(experts_flops / report["experts_fwd_ms"] / 1e6)


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        (bench_moe, ["--experts", "0"], "argument --experts: '0' is not an integer >= 1"),
        (bench_moe, ["--top-k", "1", "4", "--experts", "2"], "--top-k 4 is more than --experts 2"),
        (profile_hypermoe, ["--top-k", "9"], "--top-k 9 is more than --experts 8"),
        (profile_hypermoe, ["--rounds", "x"], "argument --rounds: 'x' is not an integer >= 1"),
    ],
)
def test_a_bad_size_is_a_usage_error(script, args, message, capsys):
    with pytest.raises(SystemExit) as stop:
        script.parse_args(args)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_a_case_that_fails_is_reported_and_the_next_ones_run(tmp_path, monkeypatch):
    """On a GPU one case may run out of memory or meet a kernel's refusal; the run keeps going."""
    real_bench_case = bench_moe.bench_case

    def first_case_fails(case, *args):
        if (case.top_k, case.tokens) == (1, 32):
            raise torch.OutOfMemoryError("injected: CUDA out of memory")
        return real_bench_case(case, *args)

    monkeypatch.setattr(bench_moe, "bench_case", first_case_fails)
    out = tmp_path / "b.json"
    with pytest.raises(SystemExit, match="1 of 2 cases failed"):
        bench_moe.main(["--quick", "--top-k", "1", "--out", str(out)])  # 32 and 128 tokens
    report = json.loads(out.read_text())
    assert [c["tokens"] for c in report["cases"]] == [128] and report["complete"] is False
    assert report["failures"] == [
        {"case": "top-1 d32 32 tokens", "error": "OutOfMemoryError: injected: CUDA out of memory"}
    ]
    assert "**Failed**: top-1 d32 32 tokens: OutOfMemoryError" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("kernel", ["loop", "grouped_mm"])
def test_gemm_efficiency_compares_the_kernel_with_its_weights_ready_and_times_the_copy_apart(kernel):
    """grouped_mm stacks (and on a GPU casts) every expert's weights on each call: the GEMMs'
    efficiency leaves that copy out, as the plain pair's cast is left out, and reports its share."""
    layer = TopKMoE(
        TopKSettings(num_experts=4, top_k=1, kernel=kernel), d_model=32, d_ff=128, activation="relu", bias=False
    )
    gemms = bench_moe.gemm_efficiency(layer, torch.randn(2, 16, 32), torch.float32, rounds=2)
    assert gemms["fraction_of_plain"] == pytest.approx(gemms["tflops_kernel"] / gemms["tflops_plain"])
    assert gemms["weight_copy_share"] == pytest.approx(1 - gemms["tflops_experts"] / gemms["tflops_kernel"])
    if kernel == "loop":  # nothing to copy: the layer's call is the kernel
        assert gemms["tflops_kernel"] == gemms["tflops_experts"] and gemms["weight_copy_share"] == 0


def test_stacked_weights_are_every_experts_in_order():
    layer = TopKMoE(TopKSettings(num_experts=3, top_k=1), d_model=8, d_ff=16, activation="relu", bias=True)
    stacked = layer.experts.stacked_weights()
    assert stacked["w_in"].shape == (3, 16, 8) and stacked["b_out"].shape == (3, 8)
    for i, ffn in enumerate(layer.experts.ffns):
        assert torch.equal(stacked["w_in"][i], ffn.fc_in.weight) and torch.equal(stacked["b_out"][i], ffn.fc_out.bias)
    # in the compute dtype: each expert cast, then stacked; the same values and gradients as a cast of the stack
    cast = layer.experts.stacked_weights(torch.bfloat16)["w_in"]
    assert cast.dtype == torch.bfloat16 and torch.equal(cast, stacked["w_in"].to(torch.bfloat16))
    upstream = torch.randn(cast.shape, dtype=torch.bfloat16)
    cast.backward(upstream)
    assert torch.equal(layer.experts.ffns[1].fc_in.weight.grad, upstream[1].float())
