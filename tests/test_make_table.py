"""make_table turns hand-written metrics.json files into the numbers a person computes by hand.

Data: CB and RTE x topk/hypermoe x 3 seeds, chosen so means, sample stds and deltas are round:
  CB f1_macro  topk .70 .80 .90 (80.00 ± 10.00, acc 85.00)   hypermoe .80 .85 .90 (85.00 ± 5.00, acc 90.00)
  RTE accuracy topk .50 .60 .70 (60.00 ± 10.00)              hypermoe .60 .64 .68 (64.00 ± 4.00)
  Avg          topk 70.00                                    hypermoe 74.50 (Δ +4.50)
"""

import csv
import json
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import make_table

SEEDS = (1, 2, 3)
CB_F1 = {"topk": (0.70, 0.80, 0.90), "hypermoe": (0.80, 0.85, 0.90)}
CB_ACC = {"topk": (0.75, 0.85, 0.95), "hypermoe": (0.90, 0.90, 0.90)}
RTE = {"topk": (0.50, 0.60, 0.70), "hypermoe": (0.60, 0.64, 0.68)}
ACTIVE = {"topk": 22_000_000, "hypermoe": 29_000_000}


def write_run(folder: Path, task: str, model: str, seed: int, best: dict, tags=("superglue", "cpu"), **config) -> Path:
    """One run folder laid out like a multirun job, with the fields train.py writes."""
    folder.mkdir(parents=True)
    main = next(iter(best))
    record = {
        "task": task,
        "model": model,
        "seed": seed,
        "tags": list(tags),
        "model_config": {"variant": model, "num_experts": 8, "top_k": 1, **config},
        "final": {f"val/{name}": value - 0.01 for name, value in best.items()},
        "best": best,
        "main_metric": main,
        "params": {"total": 78_000_000, "active_per_token": ACTIVE.get(model, 1)},
        "wall_seconds": 100.0 * int(seed),
    }
    (folder / "metrics.json").write_text(json.dumps(record))
    return folder


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "outputs" / "table" / "2026-01-01_00-00-00"
    job = 0
    for model in ("topk", "hypermoe"):
        for i, seed in enumerate(SEEDS):
            best = {"f1_macro": CB_F1[model][i], "accuracy": CB_ACC[model][i]}
            write_run(root / str(job), "superglue/cb", model, seed, best)
            write_run(root / str(job + 1), "superglue/rte", model, seed, {"accuracy": RTE[model][i]})
            job += 2
    return tmp_path / "outputs"


def read_csv(path: Path) -> dict[tuple[str, str], dict]:
    with path.open() as handle:
        return {(row["task"], row["label"]): row for row in csv.DictReader(handle)}


def tables(runs_dir: Path, out: Path, *extra: str, paper: Path | None = None) -> tuple[str, dict]:
    """The Markdown and CSV that the tables alone produce (no plots: they are tested once, below)."""
    args = make_table.parse_args([str(runs_dir), "--out", str(out), *extra])
    found = make_table.collect(args.runs_dirs, args.tag)
    cells = make_table.group_runs(found, [k for k in args.by.split(",") if k], args.metric)
    numbers = make_table.load_paper_numbers(paper) if paper else {}
    md, csv_path = make_table.write_tables(cells, found, args.metric, args.runs_dirs, out, numbers)
    return md.read_text(), read_csv(csv_path)


def test_markdown_matches_hand_computed_numbers(runs, tmp_path):
    md, _ = tables(runs, tmp_path / "t")
    assert "| Model | superglue/cb (f1_macro/accuracy) | superglue/rte (accuracy) | Avg |" in md
    assert "| topk | 80.00 ± 10.00 / 85.00 (n=3) | 60.00 ± 10.00 (n=3) | 70.00 |" in md
    assert "| hypermoe | 85.00 ± 5.00 / 90.00 (n=3) | 64.00 ± 4.00 (n=3) | 74.50 |" in md
    assert "| Δ hypermoe vs topk | +5.00 | +4.00 | +4.50 |" in md
    assert md.index("| topk |") < md.index("| hypermoe |")  # the baseline row comes first
    assert "12 runs, seeds 1, 2, 3" in md and "best validation value" in md and "cpu (12), superglue (12)" in md


def test_wall_times_are_summed_in_the_header_and_averaged_per_cell(runs, tmp_path):
    md, rows = tables(runs, tmp_path / "t")
    assert "Wall time: 40.0 min over 12 runs (100-300 s each)." in md  # 4 runs each of 100, 200, 300 s
    assert rows["superglue/cb", "topk"]["wall_seconds_mean"] == "200.0"
    edit_records(runs, lambda i, record: record.update(wall_seconds=record["wall_seconds"] * 3))
    md, _ = tables(runs, tmp_path / "t")
    assert "Wall time: 2.0 h over 12 runs (300-900 s each)." in md


def test_runs_of_a_cell_that_trained_different_step_counts_are_flagged(runs, tmp_path, caplog):
    """A debug run (debug=limit: 10 steps) among full ones, as a folder of a user's runs holds them."""
    edit_records(runs, lambda i, record: record.update(steps=96))
    trial = write_run(runs / "table" / "trial" / "0", "superglue/cb", "topk", 4, {"f1_macro": 0.5, "accuracy": 0.5})
    record = json.loads((trial / "metrics.json").read_text())
    (trial / "metrics.json").write_text(json.dumps(record | {"steps": 10}))
    _, rows = tables(runs, tmp_path / "t")
    assert rows["superglue/cb", "topk"]["n"] == "4"
    assert "superglue/cb / topk: its runs trained for different numbers of steps (10, 96)" in caplog.text
    assert "superglue/rte" not in caplog.text and "hypermoe:" not in caplog.text


def edit_records(runs: Path, edit) -> None:
    """edit(i, record) on each run's metrics.json record, in path order, written back."""
    for i, metrics in enumerate(sorted(runs.rglob("metrics.json"))):
        record = json.loads(metrics.read_text())
        edit(i, record)
        metrics.write_text(json.dumps(record))


def test_header_names_the_code_of_the_runs(runs, tmp_path):
    def set_git(i, record):
        record["git"] = "0123456789abcdef" + ("+dirty" if i < 2 else "") if i < 10 else None

    edit_records(runs, set_git)
    md, _ = tables(runs, tmp_path / "t")
    assert "Code (git commit, +dirty: uncommitted changes): 0123456 (8), 0123456+dirty (2), unknown (2)." in md


def test_header_counts_the_torch_setups_of_the_runs_that_record_them(runs, tmp_path):
    md, _ = tables(runs, tmp_path / "before")
    assert "Torch (" not in md  # runs made before the torch setup was recorded

    def set_torch(i, record):
        if i < 10:  # two runs without it
            record["torch_version"], record["torch_threads"] = "2.11.0", 1 if i < 7 else 2

    edit_records(runs, set_torch)
    md, _ = tables(runs, tmp_path / "t")
    expected = "2.11.0, 1 thread(s) (7), 2.11.0, 2 thread(s) (3)."
    assert f"Torch (a CPU run repeats its digits only with the same version and threads): {expected}" in md


def test_header_gives_each_tasks_training_set_size_from_the_runs_that_record_it(runs, tmp_path):
    md, _ = tables(runs, tmp_path / "before")
    assert "Training set size" not in md  # runs made before train_size was recorded

    def set_train_size(i, record):
        if i < 10:  # two runs without it
            record["train_size"] = 250 if record["task"] == "superglue/cb" else 1000 - 10 * (i == 1)

    edit_records(runs, set_train_size)
    md, _ = tables(runs, tmp_path / "t")
    expected = "from the 10 runs that record it: superglue/cb 250, superglue/rte 990 / 1000."
    assert f"Training set size (examples; LM: blocks), {expected}" in md


def test_markdown_lists_the_command_of_each_multirun(runs, tmp_path):
    sweep = runs / "table" / "2026-01-01_00-00-00"
    overrides = ["table=superglue_cpu", "seed=1,2,3", "model=topk,hypermoe"]
    (sweep / "multirun.yaml").write_text(json.dumps({"hydra": {"overrides": {"hydra": [], "task": overrides}}}))
    lone = write_run(tmp_path / "single" / "run", "superglue/rte", "topk", 4, {"accuracy": 0.5})
    args = make_table.parse_args([str(runs), str(lone.parent), "--out", str(tmp_path / "t")])
    found = make_table.collect(args.runs_dirs, args.tag)
    cells = make_table.group_runs(found, ["model"], "best")
    md, _ = make_table.write_tables(cells, found, "best", args.runs_dirs, tmp_path / "t", {})
    text = md.read_text()
    assert f"- `python train.py -m table=superglue_cpu seed=1,2,3 model=topk,hypermoe`: 12 run(s), in `{sweep}`" in text
    assert f"- 1 run(s) in `{tmp_path / 'single'}`, not from a multirun (no readable multirun.yaml)" in text


def test_recorded_commands_leave_out_the_paths_overrides_that_name_a_machines_folders(runs, tmp_path):
    sweep = runs / "table" / "2026-01-01_00-00-00"
    overrides = ["table=superglue_cpu", "paths.log_dir=/scratch/me/outputs", "+paths.data_dir=/data/glue",
                 "~paths.tokenizers_dir", "seed=1,2,3", "data.paths_note=kept"]  # fmt: skip
    (sweep / "multirun.yaml").write_text(json.dumps({"hydra": {"overrides": {"hydra": [], "task": overrides}}}))
    md, _ = tables(runs, tmp_path / "t")
    assert "- `python train.py -m table=superglue_cpu seed=1,2,3 data.paths_note=kept`: 12 run(s)" in md
    assert "paths." not in md and "/scratch" not in md and "/data/glue" not in md


def test_runs_outside_the_ablation_table_keep_their_variant_under_by_ablation(tmp_path):
    root = tmp_path / "outputs"
    for job, (row, model, accuracy) in enumerate(
        (("topk", "topk", 0.60), ("agg_sum", "hypermoe", 0.66), (None, "hypermoe", 0.70), ("absent", "topk", 0.50))
    ):
        folder = write_run(root / str(job), "superglue/rte", model, 1, {"accuracy": accuracy})
        if row != "absent":  # runs made before metrics.json recorded the row have no key at all
            record = json.loads((folder / "metrics.json").read_text())
            (folder / "metrics.json").write_text(json.dumps({**record, "ablation": row}))
    _, rows = tables(root, tmp_path / "t", "--by", "ablation")
    assert {label for task, label in rows if task == "superglue/rte"} == {"agg_sum", "hypermoe", "topk"}
    assert float(rows["superglue/rte", "topk"]["mean"]) == pytest.approx(0.55)  # the ablation and plain topk rows
    assert float(rows["superglue/rte", "hypermoe"]["delta_vs_topk"]) == pytest.approx(0.15)


@pytest.mark.parametrize("by", ["model,ablation", "ablation,model_config.variant"])
def test_two_leading_label_keys_are_refused(runs, tmp_path, by):
    with pytest.raises(make_table.RunsError, match="each labels runs on its own; keep one"):
        tables(runs, tmp_path / "t", "--by", by)


def test_runs_that_never_validated_are_left_out_by_name(runs, tmp_path, caplog):
    """A trial shorter than one validation interval records no metric (best: null)."""
    trial = write_run(runs / "table" / "trial" / "0", "superglue/cb", "topk", 9, {"f1_macro": 0.0, "accuracy": 0.0})
    record = json.loads((trial / "metrics.json").read_text())
    nothing = {"final": {}, "best": {"f1_macro": None, "accuracy": None}, "validated": False}
    (trial / "metrics.json").write_text(json.dumps(record | nothing))
    _, rows = tables(runs, tmp_path / "t")
    assert rows["superglue/cb", "topk"]["n"] == str(len(SEEDS))
    assert f"left out 1 run(s) that never validated: {trial / 'metrics.json'}" in caplog.text


def test_a_label_key_no_run_has_is_refused(runs, tmp_path):
    with pytest.raises(make_table.RunsError, match=r"--by model.nonexistent: no run record has it"):
        tables(runs, tmp_path / "t", "--by", "model.nonexistent,model")


def test_a_delta_of_float_noise_prints_as_zero(tmp_path):
    root = tmp_path / "outputs"
    for job, (model, value) in enumerate((("topk", 0.3), ("hypermoe", 0.1 + 0.2))):  # 0.1 + 0.2 > 0.3 by 5.6e-17
        write_run(root / str(job), "superglue/rte", model, 1, {"accuracy": 0.6 - value})
    md, rows = tables(root, tmp_path / "t")
    assert "| Δ hypermoe vs topk | +0.00 | +0.00 |" in md
    assert rows["superglue/rte", "hypermoe"]["delta_vs_topk"] == "0.0"


@pytest.mark.parametrize("task", ["glue/cola", "glue/cola_out_of_domain"])
def test_a_task_scored_by_matthews_prints_it_alone_as_glue_papers_do(tmp_path, task):
    """Whatever the task is called: a task derived from CoLA is scored and printed like CoLA."""
    for job, (model, mcc) in enumerate((("topk", 0.30), ("hypermoe", 0.35))):
        write_run(tmp_path / "outputs" / str(job), task, model, 1, {"matthews": mcc, "accuracy": 0.7})
    md, rows = tables(tmp_path / "outputs", tmp_path / "t")
    assert f"| Model | {task} (matthews) | Avg |" in md
    assert "| hypermoe | 35.00 (n=1) | 35.00 |" in md
    assert rows[task, "hypermoe"]["second_mean"] == "0.7"  # the CSV keeps both


def test_ablation_rows_are_labels_with_the_topk_row_as_baseline(tmp_path):
    root = tmp_path / "outputs"
    rows = {"topk": ("topk", 0.60), "agg_sum": ("hypermoe", 0.66), "agg_mean": ("hypermoe", 0.63)}
    for job, (row, (model, accuracy)) in enumerate(rows.items()):
        folder = write_run(root / str(job), "superglue/rte", model, 1, {"accuracy": accuracy})
        record = json.loads((folder / "metrics.json").read_text())
        (folder / "metrics.json").write_text(json.dumps({**record, "ablation": row}))
    md, csv_rows = tables(root, tmp_path / "t", "--by", "ablation")
    assert "| agg_sum | 66.00 (n=1) | 66.00 |" in md and "| agg_mean | 63.00 (n=1) | 63.00 |" in md  # apart, not merged
    assert "| Δ agg_sum vs topk | +6.00 | +6.00 |" in md and "| Δ agg_mean vs topk | +3.00 | +3.00 |" in md
    assert float(csv_rows["superglue/rte", "agg_mean"]["delta_vs_topk"]) == pytest.approx(0.03)


def test_csv_holds_both_metrics_in_run_units(runs, tmp_path):
    _, rows = tables(runs, tmp_path / "t")
    cb = rows["superglue/cb", "hypermoe"]
    assert (cb["metric"], cb["second_metric"], cb["n"], cb["seeds"]) == ("f1_macro", "accuracy", "3", "1 2 3")
    assert float(cb["mean"]) == pytest.approx(0.85) and float(cb["std"]) == pytest.approx(0.05)
    assert float(cb["second_mean"]) == pytest.approx(0.90) and float(cb["second_std"]) == pytest.approx(0.0)
    assert float(cb["delta_vs_topk"]) == pytest.approx(0.05)
    assert float(rows["superglue/rte", "hypermoe"]["delta_vs_topk"]) == pytest.approx(0.04)
    assert rows["superglue/rte", "topk"]["delta_vs_topk"] == ""  # the baseline has no delta against itself
    assert float(rows["Avg", "hypermoe"]["mean"]) == pytest.approx(0.745)
    assert float(rows["Avg", "hypermoe"]["delta_vs_topk"]) == pytest.approx(0.045)
    assert float(rows["Avg", "topk"]["mean"]) == pytest.approx(0.70)


def test_final_metric_reads_the_last_validation_values(runs, tmp_path):
    md, rows = tables(runs, tmp_path / "t", "--metric", "final")
    assert float(rows["superglue/rte", "topk"]["mean"]) == pytest.approx(0.59)
    assert "final validation value" in md


def test_tag_filter_keeps_only_tagged_runs(runs, tmp_path):
    write_run(runs / "other" / "0", "superglue/rte", "topk", 4, {"accuracy": 0.0}, tags=("glue",))
    _, everything = tables(runs, tmp_path / "all")
    assert everything["superglue/rte", "topk"]["n"] == "4"
    _, tagged = tables(runs, tmp_path / "tagged", "--tag", "superglue")
    assert tagged["superglue/rte", "topk"]["n"] == "3"
    with pytest.raises(make_table.RunsError, match=r"none of the 13 runs .* has tags \['nope'\]"):
        tables(runs, tmp_path / "none", "--tag", "nope")


def test_by_labels_and_matched_baselines(runs, tmp_path):
    for i, seed in enumerate(SEEDS):
        value = {"accuracy": 0.70 + 0.02 * i}
        write_run(runs / "n16" / str(i), "superglue/rte", "hypermoe", seed, value, num_experts=16, top_k=2)
    md, rows = tables(runs, tmp_path / "t", "--by", "model_config.num_experts,model_config.top_k,model")
    assert set(rows) >= {("superglue/rte", "topk N=8 k=1"), ("superglue/rte", "hypermoe N=16 k=2")}
    assert "| Δ hypermoe N=8 k=1 vs topk N=8 k=1 | +5.00 | +4.00 | +4.50 |" in md
    # no topk with N=16 k=2 was run, so that label has no delta rather than one against another setting
    assert rows["superglue/rte", "hypermoe N=16 k=2"]["delta_vs_topk"] == ""
    assert md.index("| topk N=8 k=1 |") < md.index("| hypermoe N=8 k=1 |") < md.index("| hypermoe N=16 k=2 |")


def test_label_parts_alias_and_missing_keys():
    record = {"model": "ffn", "model_config": {"variant": "ffn", "hypernetwork": {"bottleneck": 64}}}
    keys = ["model.num_experts", "model.hypernetwork.bottleneck", "model"]
    assert make_table.label_parts(record, keys) == ("ffn", ("bottleneck=64",))
    assert make_table.join_label(*make_table.label_parts(record, ["model.variant"])) == "ffn"


def test_perplexity_delta_is_baseline_minus_variant(tmp_path):
    root = tmp_path / "lm"
    for i, seed in enumerate(SEEDS):
        write_run(root / f"t{i}", "lm/tinyshakespeare", "topk", seed, {"perplexity": 10.0 + 2 * i}, tags=())
        write_run(root / f"h{i}", "lm/tinyshakespeare", "hypermoe", seed, {"perplexity": 9.0 + i}, tags=())
    md, rows = tables(root, tmp_path / "t")
    assert "| hypermoe | 10.00 ± 1.00 (n=3) | 10.00 |" in md  # perplexity is not scaled
    assert "| Δ hypermoe vs topk | +2.00 | +2.00 |" in md
    assert float(rows["lm/tinyshakespeare", "hypermoe"]["delta_vs_topk"]) == pytest.approx(2.0)
    assert make_table.signed_delta(10.0, 12.0, higher_is_better=False) == pytest.approx(2.0)
    assert make_table.signed_delta(0.6, 0.5, higher_is_better=True) == pytest.approx(0.1)


def test_avg_leaves_perplexity_out_when_tasks_mix_directions(runs):
    for i, seed in enumerate(SEEDS):
        write_run(runs / "lm" / str(i), "lm/tinyshakespeare", "topk", seed, {"perplexity": 50.0})
    cells = make_table.group_runs(make_table.collect([runs]), ["model"], "best")
    avg, averaged = make_table.averages(cells)
    assert averaged == ["superglue/cb", "superglue/rte"]
    assert avg["topk"] == pytest.approx(0.70)


def test_a_label_without_every_averaged_task_gets_no_avg(runs):
    """An average over fewer tasks would not compare with the other labels'."""
    for seed in SEEDS:
        write_run(runs / "ffn" / str(seed), "superglue/rte", "ffn", seed, {"accuracy": 0.99})
    cells = make_table.group_runs(make_table.collect([runs]), ["model"], "best")
    avg, averaged = make_table.averages(cells)
    assert averaged == ["superglue/cb", "superglue/rte"]
    assert "ffn" not in avg and avg["topk"] == pytest.approx(0.70)


def test_paper_numbers_are_shown_and_converted(runs, tmp_path):
    paper = tmp_path / "paper.yaml"
    paper.write_text("superglue/rte: {hypermoe: 70.5}\nsuperglue/cb: {topk: [81.0, 86.0]}\n")
    md, rows = tables(runs, tmp_path / "t", paper=paper)
    assert "| hypermoe (paper) | - | 70.5 | - |" in md
    assert "| topk (paper) | 81.0/86.0 | - | - |" in md
    assert float(rows["superglue/rte", "hypermoe"]["paper"]) == pytest.approx(0.705)
    assert float(rows["superglue/cb", "topk"]["paper_second"]) == pytest.approx(0.86)
    assert rows["superglue/rte", "topk"]["paper"] == ""


def test_shipped_paper_numbers_file_loads():
    assert isinstance(make_table.load_paper_numbers(), dict)


def test_bad_paper_numbers_name_the_file(tmp_path):
    paper = tmp_path / "paper.yaml"
    paper.write_text("superglue/rte: {hypermoe: high}\n")
    with pytest.raises(make_table.RunsError, match=r"paper\.yaml: superglue/rte/hypermoe must be a number"):
        make_table.load_paper_numbers(paper)


def test_a_missing_paper_numbers_file_is_named(tmp_path):
    with pytest.raises(make_table.RunsError, match=r"nope\.yaml: no such file of the paper's numbers"):
        make_table.load_paper_numbers(tmp_path / "nope.yaml")


def test_no_runs_exits_naming_the_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"no metrics\.json found under .*empty"):
        make_table.main([str(tmp_path / "empty"), "--out", str(tmp_path / "t")])
    with pytest.raises(SystemExit, match=r"not a folder: .*missing"):
        make_table.main([str(tmp_path / "missing"), "--out", str(tmp_path / "t")])


def test_exclude_task_leaves_its_runs_out_and_says_so(runs, tmp_path):
    """By short or qualified name, in the numbers and in the header (with the tasks it matched);
    a name that no kept run has, or an exclusion that leaves nothing, is an error."""
    make_table.main([str(runs), "--out", str(tmp_path / "t"), "--exclude-task", "cb", "--exclude-task", "cb"])
    md = (tmp_path / "t.md").read_text()
    assert "6 runs, seeds 1, 2, 3" in md and "Left out (`--exclude-task`): superglue/cb (6 runs). Metric" in md
    assert "superglue/cb" not in md.split("Left out")[1].split(". Metric", 1)[1]
    assert "| hypermoe | 64.00 ± 4.00 (n=3) | 64.00 |" in md  # RTE alone is the average
    assert set(read_csv(tmp_path / "t.csv")) == {("superglue/rte", label) for label in ("topk", "hypermoe")} | {
        ("Avg", label) for label in ("topk", "hypermoe")
    }
    glue_rte = write_run(runs / "glue" / "0", "glue/rte", "topk", 1, {"accuracy": 0.5}, tags=("glue", "cpu"))
    kept, left_out = make_table.exclude_tasks(make_table.collect([runs]), ["rte"])
    assert {run["task"] for run in kept} == {"superglue/cb"}
    assert left_out == {"superglue/rte": 6, "glue/rte": 1}  # a short name matches every benchmark's task
    with pytest.raises(make_table.RunsError, match=r"--exclude-task glue/rte: no run has that task"):
        make_table.exclude_tasks(make_table.collect([runs], ["superglue"]), ["glue/rte"])  # only the tagged runs count
    glue_rte.joinpath("metrics.json").unlink()
    with pytest.raises(
        SystemExit, match=r"--exclude-task multirc: no run has that task \(tasks: superglue/cb, superglue/rte\)"
    ):
        make_table.main([str(runs), "--out", str(tmp_path / "t"), "--exclude-task", "cb", "--exclude-task", "multirc"])
    with pytest.raises(SystemExit, match=r"--exclude-task cb, superglue/rte leaves none of the 12 runs"):
        make_table.main(
            [str(runs), "--out", str(tmp_path / "t"), "--exclude-task", "cb", "--exclude-task", "superglue/rte"]
        )


def test_malformed_metrics_json_is_named(runs, tmp_path):
    broken = runs / "table" / "broken" / "metrics.json"
    broken.parent.mkdir()
    broken.write_text("{not json")
    with pytest.raises(SystemExit, match=r"broken/metrics\.json: malformed metrics\.json"):
        make_table.main([str(runs), "--out", str(tmp_path / "t")])
    broken.write_text(json.dumps({"task": "superglue/rte", "model": "topk"}))
    with pytest.raises(SystemExit, match=r"broken/metrics\.json: malformed metrics\.json \(no seed, main_metric\)"):
        make_table.main([str(runs), "--out", str(tmp_path / "t")])
    broken.write_bytes(b"\xff\xfe{}")  # not UTF-8: a UnicodeDecodeError before JSON is parsed
    with pytest.raises(SystemExit, match=r"broken/metrics\.json: malformed metrics\.json \('utf-8' codec"):
        make_table.main([str(runs), "--out", str(tmp_path / "t")])


def write_csv_log(run_dir: Path, rows: list[dict]) -> None:
    """A Lightning CSVLogger file: a union header, each row filling only what it logged."""
    path = run_dir / "csv" / "version_0" / "metrics.csv"
    path.parent.mkdir(parents=True)
    header = sorted({key for row in rows for key in row})
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def test_load_heatmap_reads_each_runs_last_logged_step(tmp_path):
    run = write_run(tmp_path / "r" / "0", "superglue/rte", "topk", 1, {"accuracy": 0.5})
    stats = {f"moe/layer{layer}/{s}": 0.0 for layer in (0, 1) for s in make_table.LOAD_STATS}
    last = {"moe/layer0/load_max": 0.30, "moe/layer0/load_min": 0.05, "moe/layer1/load_max": 0.20}
    write_csv_log(run, [{**stats, "step": 9}, {**stats, **last, "step": 19}, {"val/accuracy": 0.5, "step": 19}])
    loads = make_table.last_layer_loads(run)
    assert loads[0, "load_max"] == pytest.approx(0.30) and loads[1, "load_min"] == 0.0
    matrices = make_table.load_matrices(make_table.group_runs(make_table.collect([tmp_path / "r"]), ["model"], "best"))
    layers, matrix = matrices["topk"]
    assert layers == [0, 1] and matrix[0][:2] == pytest.approx([0.30, 0.05])


def test_expert_load_heatmap_ranks_each_runs_experts_before_averaging(tmp_path, caplog):
    loads = [{"layer0": [0.1, 0.6, 0.3], "layer2": [0.4, 0.3, 0.3], "layer10": [0.2, 0.2, 0.6]},
             {"layer0": [0.5, 0.2, 0.3], "layer2": [0.3, 0.4, 0.3], "layer10": [0.6, 0.2, 0.2]}]  # fmt: skip
    for seed, load in enumerate(loads, start=1):
        path = write_run(tmp_path / "r" / str(seed), "superglue/rte", "topk", seed, {"accuracy": 0.5}) / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "expert_load": load}))
    mixed = write_run(tmp_path / "r" / "3", "superglue/rte", "hypermoe", 1, {"accuracy": 0.5}) / "metrics.json"
    mixed.write_text(json.dumps({**json.loads(mixed.read_text()), "expert_load": {"layer0": [0.5, 0.5]}}))
    mixed = write_run(tmp_path / "r" / "4", "superglue/rte", "hypermoe", 2, {"accuracy": 0.5}) / "metrics.json"
    mixed.write_text(json.dumps({**json.loads(mixed.read_text()), "expert_load": {"layer0": [0.5, 0.25, 0.25]}}))
    cells = make_table.group_runs(make_table.collect([tmp_path / "r"]), ["model"], "best")
    ranked = make_table.ranked_expert_loads(cells)
    layers, rows, runs = ranked["topk"]
    assert layers == ["layer0", "layer2", "layer10"] and runs == 2
    assert rows[0] == pytest.approx([0.55, 0.3, 0.15])  # [0.6, 0.3, 0.1] and [0.5, 0.3, 0.2]
    assert rows[2] == pytest.approx([0.6, 0.2, 0.2])  # the same ranked loads in both runs: no averaging away
    assert (
        "hypermoe" not in ranked and "left hypermoe out of the expert-load heatmap: its runs have [2, 3]" in caplog.text
    )


def test_head_to_head_pairs_runs_by_task_and_seed(runs, tmp_path):
    """CB f1 deltas +10, +5, 0 and RTE +10, +4, -2 points: 4 wins, 1 loss, 1 tie, mean +4.50,
    s.e. sqrt(24.7 / 6) = 2.03, sign test 2 * (C(5,0) + C(5,1)) / 2**5 = 0.375."""
    extra = write_run(runs / "table" / "extra" / "0", "superglue/rte", "hypermoe", 4, {"accuracy": 0.99})
    cells = make_table.group_runs(make_table.collect([runs]), ["model"], "best")
    result = make_table.head_to_head(cells, "hypermoe", "topk")
    assert (result.tasks_better, result.tasks_worse) == (2, 0)
    assert (result.wins, result.losses, result.ties) == (4, 1, 1)  # seed 4 has no topk run to pair with
    assert result.mean == pytest.approx(4.5)
    assert result.standard_error == pytest.approx((24.7 / 6) ** 0.5)
    assert result.sign_test_p == pytest.approx(0.375)
    reverse = make_table.head_to_head(cells, "topk", "hypermoe")
    assert (reverse.wins, reverse.losses, reverse.mean) == (1, 4, pytest.approx(-4.5))
    assert make_table.head_to_head(cells, "hypermoe", "topk_adapter") is None

    (extra / "metrics.json").unlink()
    make_table.main(
        [str(runs), "--out", str(tmp_path / "t")]
    )  # the default pairs: hypermoe vs topk_adapter has no runs
    md = (tmp_path / "t.md").read_text()
    assert "| hypermoe vs topk | 2 / 0 | 4 / 1 / 1 | +4.50 ± 2.03 | 0.375 |" in md
    assert "hypermoe vs topk_adapter" not in md  # no row
    with pytest.raises(SystemExit, match="--compare names 'dense_moe', 'topk_adaptr': no run has that label"):
        make_table.main([str(runs), "--out", str(tmp_path / "t"), "--compare", "hypermoe:topk_adaptr,dense_moe:topk"])


def test_head_to_head_pairs_each_seed_once(tmp_path):
    """A repeated seed is averaged before pairing (1 and "1" are one seed); labels without a
    shared seed get a row without a paired delta instead of failing."""
    root = tmp_path / "r"
    write_run(root / "0", "superglue/rte", "hypermoe", 1, {"accuracy": 0.60})
    write_run(root / "1", "superglue/rte", "hypermoe", "1", {"accuracy": 0.70})
    write_run(root / "2", "superglue/rte", "topk", 1, {"accuracy": 0.50})
    write_run(root / "3", "superglue/rte", "topk_adapter", 2, {"accuracy": 0.50})
    cells = make_table.group_runs(make_table.collect([root]), ["model"], "best")
    result = make_table.head_to_head(cells, "hypermoe", "topk")
    assert result.paired == [pytest.approx(15.0)]  # (60 + 70) / 2 - 50, once
    assert make_table.head_to_head(cells, "topk", "hypermoe").paired == [pytest.approx(-15.0)]
    unpaired = make_table.head_to_head_table(cells, [("hypermoe", "topk_adapter")])
    assert "| hypermoe vs topk_adapter | 1 / 0 | 0 / 0 / 0 | - | - |" in unpaired


def test_compare_pairs_are_parsed_and_bad_ones_named():
    assert make_table.parse_pairs("a:b, c:d") == [("a", "b"), ("c", "d")]
    assert make_table.parse_pairs("") == []
    with pytest.raises(make_table.RunsError, match="'ab' is not LABEL:LABEL"):
        make_table.parse_pairs("a:b,ab")


def test_cli_writes_tables_and_plots(runs, tmp_path, caplog):
    pytest.importorskip("matplotlib")
    run_dir = next(runs.glob("**/metrics.json")).parent
    write_csv_log(run_dir, [{"moe/layer0/load_max": 0.2, "moe/layer0/load_min": 0.1, "step": 1}])
    record = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**record, "expert_load": {"layer0": [0.7, 0.3]}}))
    out = tmp_path / "results" / "superglue"
    written = make_table.main([str(runs), "--out", str(out), "--tag", "superglue"])
    names = {path.name for path in written}
    plots = ("_bars.png", "_params.png", "_load.png", "_expert_load.png")
    assert names == {f"superglue{suffix}" for suffix in (".md", ".csv", *plots)}
    assert all(path.stat().st_size > 0 for path in written)


def test_a_label_keeps_its_bar_color_in_every_panel(tmp_path, monkeypatch):
    """RTE lacks dense_moe and topk_adapter runs: hypermoe is the same color in both panels."""
    plt = pytest.importorskip("matplotlib.pyplot")
    root = tmp_path / "r"
    runs = [("superglue/rte", "topk"), ("superglue/rte", "hypermoe")]
    runs += [("superglue/wic", model) for model in ("topk", "dense_moe", "hypermoe", "topk_adapter")]
    for i, (task, model) in enumerate(runs):
        write_run(root / str(i), task, model, 1, {"accuracy": 0.5})
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    make_table.plot_bars(plt, make_table.group_runs(make_table.collect([root]), ["model"], "best"), tmp_path / "b.png")
    panels = [axis for axis in figures[0].axes if axis.get_visible()]
    rte, wic = (
        {tick.get_text(): bar.get_facecolor() for tick, bar in zip(ax.get_xticklabels(), ax.patches, strict=True)}
        for ax in panels
    )
    assert rte["hypermoe"] == wic["hypermoe"] and rte["topk"] == wic["topk"]
    assert len(set(wic.values())) == 4


def test_up_to_twenty_labels_get_a_color_each(tmp_path):
    """A curves plot's legend is its only key: an ablation table's 14 rows must not share colors."""
    plt = pytest.importorskip("matplotlib.pyplot")
    root = tmp_path / "r"
    for count in (3, 14):
        for i in range(count):
            write_run(root / str(count) / str(i), "superglue/rte", f"label{i:02d}", 1, {"accuracy": 0.5})
        runs = make_table.group_runs(make_table.collect([root / str(count)]), ["model"], "best")
        colors = make_table._label_colors(plt, runs)
        assert len(colors) == count and len(set(colors.values())) == count


def test_plots_without_their_data_are_skipped_with_a_note(tmp_path, caplog):
    pytest.importorskip("matplotlib")
    root = tmp_path / "runs"
    for i, seed in enumerate(SEEDS):
        write_run(root / str(i), "superglue/rte", "ffn", seed, {"accuracy": 0.5 + 0.1 * i})
    for path in root.glob("*/metrics.json"):
        record = json.loads(path.read_text())
        del record["params"]
        path.write_text(json.dumps(record))
    with caplog.at_level(logging.INFO, logger="make_table"):
        written = make_table.main([str(root), "--out", str(tmp_path / "t")])
    assert {path.name for path in written} == {"t.md", "t.csv", "t_bars.png"}
    assert "skipped t_params.png" in caplog.text and "skipped t_load.png" in caplog.text
    assert "skipped t_expert_load.png: no run records expert_load" in caplog.text


def _char_run(folder: Path, model: str, seed: int, losses: list[float], tags=("char_lm", "cpu"), **config) -> None:
    """A character-LM run validated at steps 250, 500, ... with these losses."""
    write_run(folder, "lm/shakespeare_char", model, seed, {"loss": min(losses), "perplexity": 7.0}, tags=tags, **config)
    record = json.loads((folder / "metrics.json").read_text())
    record["history"] = [{"step": 250 * (i + 1), "val/loss": loss} for i, loss in enumerate(losses)]
    (folder / "metrics.json").write_text(json.dumps(record))


def test_loss_prints_three_decimals_and_lower_is_better(tmp_path):
    root = tmp_path / "char"
    for seed in SEEDS:
        _char_run(root / f"t{seed}", "topk", seed, [2.5, 1.9 + 0.01 * seed])
        _char_run(root / f"h{seed}", "hypermoe", seed, [2.5, 1.85 + 0.01 * seed])
    md, _ = tables(root, tmp_path / "t")
    assert "| hypermoe | 1.870 ± 0.010 / 7.00 (n=3) | 1.870 |" in md
    assert "| Δ hypermoe vs topk | +0.050 | +0.050 |" in md
    cells = make_table.group_runs(make_table.collect([root]), ["model"], "best")
    assert "| hypermoe vs topk | 1 / 0 | 3 / 0 / 0 | +0.050 ± 0.000 |" in make_table.head_to_head_table(
        cells, [("hypermoe", "topk")]
    )


def test_curves_are_the_mean_over_runs_with_a_band_from_lowest_to_highest(tmp_path, monkeypatch):
    plt = pytest.importorskip("matplotlib.pyplot")
    root = tmp_path / "char"
    _char_run(root / "a", "ffn", 1, [2.4, 2.0, 1.9])
    _char_run(root / "b", "ffn", 2, [2.6, 2.2])  # stopped early: only the steps every run reached are drawn
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    cells = make_table.group_runs(make_table.collect([root]), ["model"], "best")
    make_table.plot_curves(plt, cells, tmp_path / "c.png")
    axis = figures[0].axes[0]
    assert axis.lines[0].get_xydata().tolist() == [[250, 2.5], [500, pytest.approx(2.1)]]
    band = axis.collections[0].get_paths()[0].vertices[:, 1]
    assert min(band) == pytest.approx(2.0) and max(band) == pytest.approx(2.6)


def test_grid_heatmap_has_n_down_k_across_and_the_reference_row(tmp_path, monkeypatch):
    plt = pytest.importorskip("matplotlib.pyplot")
    grid, dense = tmp_path / "grid", tmp_path / "dense"
    for n in (4, 8):
        for k in (1, 2):
            for seed in (1, 2):
                _char_run(grid / f"{n}{k}{seed}", "topk", seed, [2.5, 2.0 - 0.01 * n - 0.1 * k + 0.01 * seed],
                          tags=("experts_topk_char", "cpu"), num_experts=n, top_k=k)  # fmt: skip
    _char_run(dense / "f1", "ffn", 1, [1.9], num_experts=None, top_k=None)  # a dense model has neither
    _char_run(dense / "t1", "topk", 1, [1.5])  # the other table's topk runs stay out
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    args = [str(grid), "--reference", f"{dense}:ffn", "--by", "model.num_experts,model.top_k,model"]
    written = make_table.main([*args, "--out", str(tmp_path / "g")])
    assert {"g_grid.png", "g_curves.png"} <= {path.name for path in written}
    axis = next(figure for figure in figures if "topk (loss)" in figure.axes[0].get_title()).axes[0]
    assert [tick.get_text() for tick in axis.get_yticklabels()] == ["N=4", "N=8"]
    assert [tick.get_text() for tick in axis.get_xticklabels()] == ["k=1", "k=2"]
    texts = [text.get_text() for text in axis.texts]  # row by row: N=4 k=1, N=4 k=2, N=8 k=1, N=8 k=2
    assert texts[0] == "1.875\n± 0.007" and texts[3] == "1.735\n± 0.007"
    assert "ffn 1.900" in axis.get_title()
    md = (tmp_path / "g.md").read_text()
    assert "| ffn | 1.900 (n=1) |" in md.replace(" / 7.00", "") and "1.500" not in md
    with pytest.raises(SystemExit, match="no 'dense_moe' run under"):
        make_table.main([*args[:1], "--reference", f"{dense}:dense_moe", "--out", str(tmp_path / "x")])
