"""The layer benchmark runs end to end on tiny shapes and writes every ratio (timings are not asserted)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import bench_moe


def test_bench_writes_every_ratio(tmp_path):
    out = tmp_path / "bench.json"
    bench_moe.main(["--quick", "--out", str(out)])
    report = json.loads(out.read_text())
    top1, top2 = report["cases"]
    assert set(top1["ratios"]) >= {"topk_over_ffn", "hypermoe_over_topk", "hypermoe_pertoken_over_hypermoe"}
    assert "topk_over_hf_switch" in top1["ratios"] and "topk_over_hf_switch" not in top2["ratios"]
    assert all(seconds > 0 for seconds in top1["seconds_fwd_bwd"].values())
    assert set(top1["targets_met"]) == set(bench_moe.TARGETS)
