"""routing_stats turns run records into the per-layer numbers a person computes by hand.

Hand-written runs: topk seeds 1-2 with 4 experts, one MoE layer each.
  seed 1: load (0.5, 0.5, 0, 0)        -> entropy log 2 / log 4 = 0.5, busiest share x N = 2.0
          expert_change 0.4, 0.2       -> last 0.2, mean 0.3; router entropy logged 1.0 then 0.8 -> 0.8
  seed 2: load (0.25, 0.25, 0.25, 0.25) -> entropy 1.0, busiest x N = 1.0
          expert_change 0.1, 0.1       -> last 0.1, mean 0.1; no CSV log
"""

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import routing_stats

COMMITTED = Path(__file__).resolve().parents[1] / "experiments" / "results" / "runs" / "hyper_ablation_char_cpu"


def write_run(
    folder: Path,
    seed: int,
    load: list[float],
    changes: list[float],
    entropies=(),
    task="lm/shakespeare_char",
    layer="layer0",
) -> None:
    folder.mkdir(parents=True)
    record = {
        "task": task,
        "model": "topk",
        "seed": seed,
        "main_metric": "loss",
        "best": {"loss": 1.8},
        "expert_load": {layer: load},
        "history": [
            {"step": 250 * (i + 1), "val/loss": 2.0, f"moe/{layer}/expert_change": c} for i, c in enumerate(changes)
        ],
    }
    (folder / "metrics.json").write_text(json.dumps(record))
    if entropies:
        log = folder / "csv" / "version_0"
        log.mkdir(parents=True)
        rows = [{"step": step, f"moe/{layer}/router_entropy": value} for step, value in enumerate(entropies)]
        rows.append({"step": len(rows), f"moe/{layer}/router_entropy": None})  # a validation row logs none
        pd.DataFrame(rows).to_csv(log / "metrics.csv", index=False)


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    write_run(root / "0", 1, [0.5, 0.5, 0.0, 0.0], [0.4, 0.2], entropies=[1.0, 0.8])
    write_run(root / "1", 2, [0.25, 0.25, 0.25, 0.25], [0.1, 0.1])
    return root


def test_statistics_match_a_hand_computation(runs, tmp_path):
    md, csv = routing_stats.main([str(runs), "--out", str(tmp_path / "routing")])
    row = pd.read_csv(csv).iloc[0]
    assert (row["label"], row["layer"], row["runs"]) == ("topk", "layer0", 2)
    assert row["load_entropy_mean"] == pytest.approx(0.75, rel=1e-5)
    assert row["load_entropy_std"] == pytest.approx(0.5**0.5 * 0.5, rel=1e-5)  # sample std of 0.5 and 1.0
    assert row["busiest_share_x_n_mean"] == pytest.approx(1.5, rel=1e-5)
    assert row["expert_change_last_mean"] == pytest.approx(0.15, rel=1e-5)
    assert row["expert_change_mean_mean"] == pytest.approx(0.2, rel=1e-5)
    assert row["router_entropy_mean"] == pytest.approx(0.8, rel=1e-5)  # the one run with a log, its last logged value
    assert (row["load_entropy_n"], row["router_entropy_n"]) == (2, 1)
    text = md.read_text()
    assert "| lm/shakespeare_char | topk | layer0 | 2 | 0.750 ± 0.354 | 1.500 ± 0.707 |" in text
    assert "| 0.800 (n=1) |" in text  # a statistic fewer runs have says how many


def test_tasks_stay_apart_layers_sort_by_number_and_loads_are_normalised(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "0", 1, [2.0, 2.0], [0.5, 0.3], task="lm/wikitext2", layer="layer10")  # shares sum to 4
    write_run(root / "1", 1, [1.0, 0.0], [0.2, 0.1], task="lm/wikitext2", layer="layer2")
    write_run(root / "2", 1, [0.9, 0.1], [0.4, 0.6], task="lm/shakespeare_char")
    table = pd.read_csv(routing_stats.main([str(root), "--out", str(tmp_path / "routing")])[1])
    assert list(zip(table["task"], table["layer"], strict=True)) == [
        ("lm/shakespeare_char", "layer0"),
        ("lm/wikitext2", "layer2"),
        ("lm/wikitext2", "layer10"),
    ]
    assert table["runs"].tolist() == [1, 1, 1]  # one run each: the tasks are not averaged together
    assert table["load_entropy_mean"].tolist()[1:] == [0.0, 1.0]  # one expert takes all; an even load
    assert table["busiest_share_x_n_mean"].tolist()[1:] == [2.0, 1.0]
    assert table["expert_change_last_mean"].tolist() == pytest.approx([0.6, 0.1, 0.3])


def test_a_single_expert_or_an_empty_load_has_no_balance():
    assert all(math.isnan(v) for v in routing_stats.load_balance([1.0]).values())
    assert all(math.isnan(v) for v in routing_stats.load_balance([0.0, 0.0]).values())


def test_unknown_label_is_named(runs, tmp_path):
    with pytest.raises(SystemExit, match="--labels hypermoe: no run has that label"):
        routing_stats.main([str(runs), "--labels", "hypermoe", "--out", str(tmp_path / "routing")])


def test_committed_gating_runs_give_every_layer_of_every_label(tmp_path):
    labels = ["topk", "topk_gating_noisy", "agg_sum", "gating_noisy"]
    _, csv = routing_stats.main(
        [str(COMMITTED), "--by", "ablation", "--labels", ",".join(labels), "--out", str(tmp_path / "gating")]
    )
    table = pd.read_csv(csv)
    assert list(table["label"].unique()) == labels
    assert set(table["layer"]) == {"layer0", "layer1", "layer2", "layer3"}
    assert table["load_entropy_mean"].between(0, 1).all() and (table["busiest_share_x_n_mean"] >= 1).all()
    assert table["expert_change_last_mean"].between(0, 1).all()
