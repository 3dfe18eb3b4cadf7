"""The decoding benchmark runs end to end on switch_tiny and writes the same numbers to its JSON and
Markdown (timings themselves are not asserted)."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import bench_decode


@pytest.mark.usefixtures("tokenizers_root")  # the real T5 tokenizer files
def test_tiny_decoding_benchmark_reports_every_candidate_per_batch(tmp_path):
    out = tmp_path / "decode.json"
    argv = ["--tiny", "--rounds", "2", "--new-tokens", "2", "--batches", "2", "1", "--threads", "1", "--out", str(out)]
    threads = torch.get_num_threads()
    report = bench_decode.main(argv)
    assert torch.get_num_threads() == threads  # --threads holds for the benchmark only: the tests run on
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["family"] == "switch_tiny" and report["seq_len"] == 32 and report["new_tokens"] == 2
    assert [row["batch"] for row in report["batches"]] == [2, 1]
    table = out.with_suffix(".md").read_text()
    assert f"{report['machine']}, torch" in table and f"{report['wall_seconds']:.0f} s, load average" in table
    for row in report["batches"]:
        assert set(row["step_ms"]) == set(bench_decode.CANDIDATES)
        assert all(len(rounds) == 2 for rounds in row["step_ms_per_round"].values())
        assert all(math.isfinite(value) for value in (*row["step_ms"].values(), *row["ratios"].values()))
        assert set(row["ratios"]) == set(bench_decode.RATIOS)
        times = " | ".join(f"{row['step_ms'][name]:.1f}" for name in bench_decode.CANDIDATES)
        ratios = " | ".join(f"{row['ratios'][ratio]:.3f}" for ratio in bench_decode.RATIOS)
        assert f"| {row['batch']} | {times} | {ratios} |" in table


@pytest.mark.parametrize("option", ["--new-tokens", "--rounds", "--batches", "--threads"])
def test_counts_below_one_are_refused(option, capsys):
    with pytest.raises(SystemExit):
        bench_decode.parse_args([option, "0"])
    assert f"argument {option}: '0' is not an integer >= 1" in capsys.readouterr().err
