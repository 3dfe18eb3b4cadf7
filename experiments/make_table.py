"""Paper-style result tables and plots from the ``metrics.json`` files that train.py writes.

    python experiments/make_table.py outputs/table/superglue_cpu --out experiments/results/superglue_cpu
    python experiments/make_table.py outputs/table/experts_topk_cpu --out experiments/results/experts_topk_cpu \\
        --by model_config.num_experts,model_config.top_k,model
    python experiments/make_table.py outputs/table/hyper_ablation_cpu --out experiments/results/hyper_ablation_cpu \\
        --by ablation --compare agg_sum:topk,agg_sum:adapter_matched
    python experiments/make_table.py outputs/table/superglue_cpu --exclude-task multirc \\
        --out experiments/results/superglue_cpu_without_multirc

Every ``**/metrics.json`` under the given folders is one run (``--tag`` keeps those with a tag,
``--exclude-task`` leaves a task's runs out, and the header says so). Runs are grouped by task and by a
column label (the variant by default; ``--by`` takes dotted keys into the run record, a ``model.``
prefix reading ``model_config`` as in Hydra overrides). Each (task, label) cell is the mean ± sample
std over its seeds of the task's main metric; for two-metric tasks (CB, MRPC, STS-B, MultiRC, ...)
the second metric follows after a slash, as GLUE papers print them. ``Avg`` is the mean of the
per-task means of the main metric, as the paper averages. Deltas compare each label with the
``topk`` label that has the same other ``--by`` values (so an ablation compares like with like;
``--by ablation`` labels runs by their conf/ablation row, and the ``topk`` row is the baseline);
positive is better for every metric, perplexity included.

Outputs, all beside ``--out``:
- ``<out>.md``: header line (runs, seeds, metric, tags: subsampled tables say so in their tags;
  each task's training set size, where the runs record it), table.
  Scores are x100 except perplexity and loss (in nats, 3 decimals); deltas are in the same units.
  Then a head-to-head table for each ``--compare A:B`` pair (default hypermoe:topk and
  hypermoe:topk_adapter): on how many tasks A's mean is better, and over the seed-paired runs (same
  task, same seed, so the same data subsample) how many A wins, loses and ties, the mean paired
  delta ± its standard error, and a two-sided sign test over the untied pairs. Last, the command of
  each multirun the runs came from (its ``multirun.yaml``, less any ``paths.*`` override: those name
  one machine's folders), with how many of the runs it gave.
- ``<out>.csv``: one row per task x label (and an ``Avg`` row per label) in the runs' own units
  (fractions), with mean, std, n, delta_vs_topk, the paper's number (converted to those units) and
  the runs' mean wall time (``wall_seconds`` in metrics.json; the header sums them).
- ``<out>_bars.png`` (per-task bars with std error bars), ``<out>_params.png`` (main metric against
  active parameters per token), ``<out>_load.png`` (per-layer load statistics during training) and
  ``<out>_expert_load.png`` (per-expert load per layer at the last validation).
  ``_load.png`` reads the CSV logs, which hold per layer ``load_max``/``load_min``/
  ``load_max_min_ratio``/``dead_experts``: layers x those statistics at each run's last logged
  step, averaged over the label's runs. ``_expert_load.png`` reads metrics.json's ``expert_load``
  (each expert's share of the layer's routed tokens; for dense_moe its mean routing weight): layers
  x experts ranked by load, averaged over the label's runs. ``<out>_curves.png``: the main metric at
  every validation against the training step (metrics.json's ``history``), per label the mean over
  its runs with a band from the lowest to the highest. ``<out>_grid.png``, for labels that name N and
  k: per variant a heatmap of the main metric over N x k, with any reference row in the title. A plot
  whose data is missing is skipped with a logged note.

``--reference RUNS_DIR:MODEL`` adds variant MODEL's runs under RUNS_DIR whatever their tags, e.g. the
dense ``ffn`` runs of one table as the reference row of another:

    python experiments/make_table.py outputs/table/experts_topk_char_cpu --reference outputs/table/char_lm_cpu:ffn \
        --by model.num_experts,model.top_k,model --out experiments/results/experts_topk_char_cpu

Paper numbers come from ``paper_numbers.yaml`` beside this script, in the paper's printed units.
"""

import argparse
import json
import logging
import math
import re
import shlex
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _this_checkout  # noqa: F401  (first: this checkout's hypermoe, not an installed one)
import numpy as np
import pandas as pd
import yaml
from scipy.stats import binomtest

from hypermoe.config import names_machine_paths
from hypermoe.data.metrics import metric_mode

log = logging.getLogger("make_table")

PAPER_NUMBERS = Path(__file__).resolve().parent / "paper_numbers.yaml"
BASELINE = "topk"
# their value leads the label, bare: the variant, or the conf/ablation row (whose reference row is topk)
VARIANT_KEYS = ("model", "model_config.variant", "ablation")
SHORT_NAMES = {"num_experts": "N", "top_k": "k"}
SINGLE_NUMBER_METRICS = {"matthews"}  # GLUE papers print CoLA (and any task scored by it) as Matthews only
MISSING = "-"  # a cell with no runs, or a number that does not exist (std of one seed)
TIE = 1e-9  # metric values are exact fractions of a dev set: closer than this is the same score


class RunsError(Exception):
    """A problem with the runs given, worded for the person who gave them; main exits with it."""


# ---------------------------------------------------------------- collecting runs


def find_metric_files(dirs: Sequence[Path]) -> list[Path]:
    """Every metrics.json under ``dirs``, once each even where the folders overlap."""
    missing = [str(d) for d in dirs if not Path(d).is_dir()]
    if missing:
        raise RunsError(f"not a folder: {', '.join(missing)}")
    files = sorted({path.resolve() for d in dirs for path in Path(d).glob("**/metrics.json")}, key=natural_key)
    if not files:
        raise RunsError(f"no metrics.json found under {', '.join(str(d) for d in dirs)}")
    return files


def load_run(path: Path) -> dict[str, Any]:
    """One run record, checked for the keys the table needs, so a broken file is named, not a KeyError."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunsError(f"{path}: malformed metrics.json ({error})") from error
    if not isinstance(record, dict):
        raise RunsError(f"{path}: malformed metrics.json (not a JSON object)")
    missing = [key for key in ("task", "model", "seed", "main_metric") if key not in record]
    if missing:
        raise RunsError(f"{path}: malformed metrics.json (no {', '.join(missing)})")
    record["_file"] = Path(path)
    return record


def collect(dirs: Sequence[Path], tags: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The runs under ``dirs`` that carry every tag in ``tags`` and validated at least once."""
    runs = [load_run(path) for path in find_metric_files(dirs)]
    kept = [run for run in runs if set(tags) <= set(run.get("tags") or ())]
    if not kept:
        raise RunsError(f"none of the {len(runs)} runs under {', '.join(map(str, dirs))} has tags {list(tags)}")
    unvalidated = [run["_file"] for run in kept if run.get("validated") is False]  # older records lack the key
    if unvalidated:  # a trial shorter than one validation interval (trainer.max_steps=4): it has no metric
        log.warning("left out %d run(s) that never validated: %s", len(unvalidated), ", ".join(map(str, unvalidated)))
        kept = [run for run in kept if run.get("validated") is not False]
    if not kept:
        raise RunsError(f"none of the runs under {', '.join(map(str, dirs))} ever validated: no metric to table")
    return kept


def references(specs: Sequence[str]) -> list[dict[str, Any]]:
    """The runs each ``RUNS_DIR:MODEL`` names: variant MODEL's runs under RUNS_DIR."""
    runs = []
    for spec in specs:
        folder, _, model = spec.rpartition(":")
        if not folder or not model:
            raise RunsError(f"--reference {spec!r}: expected RUNS_DIR:MODEL, e.g. outputs/table/char_lm_cpu:ffn")
        found = [run for run in collect([Path(folder)]) if run["model"] == model]
        if not found:
            raise RunsError(f"--reference {spec!r}: no {model!r} run under {folder}")
        runs += found
    return runs


def task_matches(task: str, name: str) -> bool:
    """``name`` is the qualified task (``superglue/multirc``) or its last part (``multirc``)."""
    return name in (task, task.rsplit("/", 1)[-1])


def exclude_tasks(runs: Sequence[dict[str, Any]], names: Sequence[str]) -> tuple[list[dict[str, Any]], Counter]:
    """The runs of no task in ``names``, and how many runs of each (qualified) task were left out."""
    tasks = sorted({run["task"] for run in runs})
    unknown = [name for name in dict.fromkeys(names) if not any(task_matches(task, name) for task in tasks)]
    if unknown:  # a typo would otherwise leave the table silently unchanged
        raise RunsError(f"--exclude-task {', '.join(unknown)}: no run has that task (tasks: {', '.join(tasks)})")
    excluded = {task for task in tasks if any(task_matches(task, name) for name in names)}
    kept = [run for run in runs if run["task"] not in excluded]
    if not kept:
        raise RunsError(f"--exclude-task {', '.join(names)} leaves none of the {len(runs)} runs")
    return kept, Counter(run["task"] for run in runs if run["task"] in excluded)


# ---------------------------------------------------------------- labels


def canonical_key(dotted: str) -> str:
    """``model.x`` -> ``model_config.x``, as Hydra overrides name it: the record's ``model`` is just the variant."""
    return "model_config." + dotted.removeprefix("model.") if dotted.startswith("model.") else dotted


def resolve(record: dict[str, Any], dotted: str) -> Any:
    """``a.b.c`` looked up in the run record (see canonical_key); None when absent."""
    value: Any = record
    for part in canonical_key(dotted).split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def check_by(keys: Sequence[str]) -> None:
    """At most one key may lead the label: two would each replace the other's value."""
    leading = [key for key in keys if canonical_key(key) in VARIANT_KEYS]
    if len(leading) > 1:
        raise RunsError(f"--by names {' and '.join(leading)}: each labels runs on its own; keep one")


def label_parts(record: dict[str, Any], keys: Sequence[str]) -> tuple[str | None, tuple[str, ...]]:
    """(variant or None, the other ``name=value`` parts); keys a run lacks (N for ffn) are left out.
    A run outside the ablation table (no ``ablation`` row) is labelled by its variant."""
    variant, others = None, []
    for key in keys:
        value = resolve(record, key)
        if key == "ablation" and value is None:
            value = record["model"]
        if value is None:
            continue
        if canonical_key(key) in VARIANT_KEYS:
            variant = str(value)
        else:
            name = key.rsplit(".", 1)[-1]
            others.append(f"{SHORT_NAMES.get(name, name)}={value}")
    return variant, tuple(others)


def join_label(variant: str | None, others: tuple[str, ...]) -> str:
    return " ".join(([variant] if variant else []) + list(others)) or "all"


def natural_key(text: Any) -> list:
    """Sorts ``N=8`` before ``N=16`` and job folder ``2`` before ``10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def label_key(label: str) -> tuple:
    """Baseline labels first (the rows the others are read against), the rest in natural order."""
    return label.split(" ")[0] != BASELINE, natural_key(label)


# ---------------------------------------------------------------- the table of runs


def metric_value(record: dict[str, Any], name: str, which: str) -> float | None:
    """``best``: the best validation value over epochs; ``final``: the last validation value."""
    value = (record.get("best") or {}).get(name) if which == "best" else (record.get("final") or {}).get(f"val/{name}")
    return None if value is None else float(value)


def second_metric(record: dict[str, Any]) -> str | None:
    """The task's other metric: ``best`` lists the task's metrics in order, main metric first."""
    others = [name for name in record.get("best") or {} if name != record["main_metric"]]
    return others[0] if others else None


def shown_path(path: Path) -> Path:
    """``path`` relative to the working directory when under it (the tables' own folder names)."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


RUN_FIELDS = [
    "task", "model", "seed", "main_metric", "tags", "git", "torch_version", "torch_threads", "train_size",
    "steps", "wall_seconds", "_file",
]  # fmt: skip


def run_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per run with the record's own fields (missing ones NaN), the seed as text (1 and "1"
    are one seed) and the multirun folder it came from (``<sweep>/<job>/metrics.json``)."""
    runs = pd.DataFrame(list(records), columns=RUN_FIELDS)
    runs["seed"] = runs["seed"].astype(str)
    runs["sweep"] = [str(shown_path(path.parent.parent)) for path in runs["_file"]]
    return runs


def group_runs(records: Sequence[dict[str, Any]], by: Sequence[str], which: str) -> pd.DataFrame:
    """The runs labelled by ``by`` with their metric values, in (task, label) order.

    ``label`` is ordered (baseline labels first); ``baseline`` is the label each run's delta is
    taken against; every run of a (task, label) cell is read on the metrics of the cell's first run.
    """
    check_by(by)
    for key in by:  # a key no run has would label every run alike ("all"), silently
        if key != "ablation" and all(resolve(record, key) is None for record in records):
            raise RunsError(
                f"--by {key}: no run record has it (a model setting is model.<name>, e.g. model.num_experts; "
                f"the records' top-level keys are {sorted(set().union(*records))})"
            )
    runs = run_table(records)
    parts = [label_parts(record, by) for record in records]
    labels = [join_label(*part) for part in parts]
    runs["label"] = pd.Categorical(labels, categories=sorted(set(labels), key=label_key), ordered=True)
    runs["settings"] = [others for _, others in parts]  # the label's parts besides the variant (N=4, k=1)
    runs["baseline"] = [join_label(BASELINE, others) if variant else None for variant, others in parts]
    runs["second_metric"] = [second_metric(record) for record in records]
    cell = runs.groupby(["task", "label"], observed=True)
    runs["metric"] = cell["main_metric"].transform("first")
    runs["second_metric"] = cell["second_metric"].transform("first")
    runs["value"] = [metric_value(r, m, which) for r, m in zip(records, runs["metric"], strict=True)]
    for path, metric in runs.loc[runs["value"].isna(), ["_file", "metric"]].itertuples(index=False):
        raise RunsError(f"{path}: malformed metrics.json (no {which} value of {metric!r})")
    second = [metric_value(r, m, which) if m else None for r, m in zip(records, runs["second_metric"], strict=True)]
    runs["second_value"] = pd.Series(second, dtype=float)
    runs["active_params"] = pd.Series([resolve(r, "params.active_per_token") for r in records], dtype=float)
    runs["expert_load"] = [record.get("expert_load") or None for record in records]
    runs["history"] = [h if len(h := record.get("history") or []) > 1 else None for record in records]
    runs["run_dir"] = [path.parent for path in runs["_file"]]
    repeated = runs[runs.duplicated(["task", "label", "seed"])]
    for (task, label), seeds in repeated.groupby(["task", "label"], observed=True)["seed"]:
        log.warning("%s / %s: seed(s) %s appear more than once; all are averaged", task, label, list(seeds.unique()))
    steps = runs.dropna(subset=["steps"]).groupby(["task", "label"], observed=True)["steps"].unique()
    for (task, label), counts in steps[steps.map(len) > 1].items():  # the same settings train as many steps
        log.warning(
            "%s / %s: its runs trained for different numbers of steps (%s), so with other settings (a debug or "
            "trial run among full ones?); all are averaged: pass the folder or --tag that holds only the runs meant",
            task, label, ", ".join(str(int(n)) for n in sorted(counts)),
        )  # fmt: skip
    return runs.sort_values(["task", "label"], kind="stable", ignore_index=True)


def label_order(runs: pd.DataFrame) -> list[str]:
    return list(runs["label"].cat.categories)


# ---------------------------------------------------------------- numbers


def scale(metric: str) -> float:
    """Display factor: fractions print as percentages, as in the papers; perplexity as is."""
    return 1.0 if metric_mode(metric) == "min" else 100.0


def signed_delta(value, baseline, higher_is_better):
    """Positive when ``value`` is better than ``baseline``: for perplexity that is baseline - value.
    Scalars or aligned Series alike."""
    return (value - baseline) * np.where(higher_is_better, 1.0, -1.0)


def cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, label) cell, in table order: mean ± sample std (NaN for one seed) of the
    main and second metric, seeds, mean wall time and active parameters, and the delta against the
    cell of the label's baseline on the same task (NaN for baselines and labels without one)."""
    cells = runs.groupby(["task", "label"], observed=True).agg(
        metric=("metric", "first"),
        second_metric=("second_metric", "first"),
        baseline=("baseline", "first"),
        settings=("settings", "first"),
        mean=("value", "mean"),
        std=("value", "std"),
        n=("value", "size"),
        second_mean=("second_value", "mean"),
        second_std=("second_value", "std"),
        seeds=("seed", lambda seeds: " ".join(sorted(seeds, key=natural_key))),
        wall_seconds=("wall_seconds", "mean"),
        active_params=("active_params", "mean"),
    )
    cells["higher_is_better"] = cells["metric"].map(metric_mode) == "max"
    cells["scale"] = cells["metric"].map(scale)
    cells["digits"] = cells["metric"].map(digits)
    flat = cells.reset_index().astype({"label": str})
    baselines = flat[["task", "label", "mean"]].set_axis(["task", "baseline", "baseline_mean"], axis=1)
    flat = flat.merge(baselines, on=["task", "baseline"], how="left")
    delta = signed_delta(flat["mean"], flat["baseline_mean"], flat["higher_is_better"])
    cells["delta"] = delta.where(flat["baseline"] != flat["label"]).to_numpy()
    return cells


def averages(runs: pd.DataFrame) -> tuple[dict[str, float], list[str]]:
    """Per label, the mean of its per-task means over the averaged tasks; and those tasks.

    Perplexity does not average with accuracies, so when the tasks mix metric directions only the
    higher-is-better ones are averaged. A label missing one of those tasks gets no Avg rather than
    an average over fewer tasks, which would not compare with the others.
    """
    cells = cell_table(runs)
    higher = sorted(cells[cells["higher_is_better"]].index.unique("task"))
    averaged = higher or sorted(cells.index.unique("task"))
    means = cells["mean"].unstack("task")[averaged].dropna()
    return means.mean(axis=1).to_dict(), averaged


def label_baselines(runs: pd.DataFrame) -> pd.Series:
    """label -> the label its deltas are taken against (NaN for a label without a variant)."""
    return runs.groupby("label", observed=True)["baseline"].first()


def avg_deltas(runs: pd.DataFrame, avg: dict[str, float], averaged: Sequence[str]) -> dict[str, float]:
    baselines = label_baselines(runs)
    higher = cell_table(runs).loc[averaged, "higher_is_better"].any()
    return {
        label: signed_delta(value, avg[baselines[label]], higher)
        for label, value in avg.items()
        if baselines.get(label) in avg and baselines[label] != label
    }


class HeadToHead:
    """Label ``first`` against label ``second`` on the averaged tasks both have runs for: on how many
    tasks the first's mean is better or worse, and the signed delta (display units) of each
    (task, seed) both ran, a seed run more than once counting once with its mean."""

    def __init__(self, tasks_better: int, tasks_worse: int, paired: list[float]):
        self.tasks_better, self.tasks_worse, self.paired = tasks_better, tasks_worse, paired
        deltas = pd.Series(paired, dtype=float)
        self.wins, self.losses = int((deltas > TIE).sum()), int((deltas < -TIE).sum())
        self.ties = len(paired) - self.wins - self.losses
        self.mean = deltas.mean()  # NaN when no seed ran for both
        self.standard_error = deltas.sem()  # NaN for one pair
        # two-sided exact binomial test of wins against losses, ties dropped
        untied = self.wins + self.losses
        self.sign_test_p = binomtest(self.wins, untied).pvalue if untied else math.nan


DEFAULT_PAIRS = "hypermoe:topk,hypermoe:topk_adapter"


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """``a:b,c:d`` -> [(a, b), (c, d)]."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        first, sep, second = item.partition(":")
        if not sep or not first.strip() or not second.strip():
            raise RunsError(f"--compare {text!r}: {item!r} is not LABEL:LABEL")
        pairs.append((first.strip(), second.strip()))
    return pairs


def check_pair_labels(pairs: Sequence[tuple[str, str]], labels: Sequence[str]) -> None:
    """Refuses a pair naming a label no run has: a misspelt ``--compare`` would drop its table."""
    unknown = sorted({label for pair in pairs for label in pair} - set(labels))
    if unknown:
        raise RunsError(
            f"--compare names {', '.join(map(repr, unknown))}: no run has that label (labels: {', '.join(labels)})"
        )


def head_to_head(runs: pd.DataFrame, first: str, second: str) -> HeadToHead | None:
    """None when the two labels share no averaged task."""
    _, averaged = averages(runs)
    means = cell_table(runs)[["mean", "metric", "higher_is_better", "scale"]].reset_index().astype({"label": str})
    means = means[means["task"].isin(averaged)]
    tasks = means[means["label"] == first].merge(means[means["label"] == second], on="task", suffixes=("", "_2"))
    if tasks.empty:
        return None
    task_delta = signed_delta(tasks["mean"], tasks["mean_2"], tasks["higher_is_better"])
    seeds = runs.astype({"label": str}).groupby(["task", "label", "seed"], as_index=False)["value"].mean()
    pairs = (
        tasks[["task", "higher_is_better", "scale"]]
        .merge(seeds[seeds["label"] == first], on="task")
        .merge(seeds[seeds["label"] == second], on=["task", "seed"], suffixes=("", "_2"))
    )
    paired = signed_delta(pairs["value"], pairs["value_2"], pairs["higher_is_better"]) * pairs["scale"]
    return HeadToHead(int((task_delta > TIE).sum()), int((task_delta < -TIE).sum()), paired.tolist())


def load_paper_numbers(path: Path = PAPER_NUMBERS) -> dict[str, dict[str, list[float]]]:
    """``task -> variant -> [main]`` or ``[main, second]``, in the paper's printed units."""
    if not Path(path).is_file():
        raise RunsError(f"{path}: no such file of the paper's numbers (--paper)")
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as error:
        raise RunsError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(data, dict):
        raise RunsError(f"{path}: expected a mapping '<task>: {{<variant>: value}}', got {data!r}")
    out: dict[str, dict[str, list[float]]] = {}
    for task, variants in data.items():
        if not isinstance(variants, dict):
            raise RunsError(f"{path}: expected '<task>: {{<variant>: value}}', got {task}: {variants!r}")
        for variant, value in variants.items():
            numbers = value if isinstance(value, list) else [value]
            if not numbers or len(numbers) > 2 or not all(isinstance(x, int | float) for x in numbers):
                raise RunsError(f"{path}: {task}/{variant} must be a number or [main, second], got {value!r}")
            out.setdefault(task, {})[str(variant)] = [float(x) for x in numbers]
    return out


# ---------------------------------------------------------------- writing


def _fmt(value: float, signed: bool = False, digits: int = 2) -> str:
    if pd.isna(value):
        return MISSING
    value = round(float(value), digits) + 0.0  # float: Python's rounding, not numpy's; + 0.0: -0.00 prints as 0.00
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def digits(metric: str) -> int:
    """Decimals printed: a loss in nats differs between variants in its second decimal, so 3."""
    return 3 if metric == "loss" else 2


def format_cell(cell: pd.Series) -> str:
    """``mean ± std / second (n=3)``, x100 for fractions; the std belongs to the main metric."""
    k, d = cell["scale"], cell["digits"]
    text = _fmt(cell["mean"] * k, digits=d) + (f" ± {_fmt(cell['std'] * k, digits=d)}" if cell["n"] > 1 else "")
    if not pd.isna(cell["second_mean"]) and cell["metric"] not in SINGLE_NUMBER_METRICS:
        text += f" / {_fmt(cell['second_mean'] * scale(cell['second_metric']))}"
    return f"{text} (n={cell['n']})"


def short_commit(git: Any) -> str:
    """A run's git field, ``<full hash>`` or ``<full hash>+dirty`` (uncommitted changes), with
    the hash cut to 7 characters; ``unknown`` for runs that have none."""
    if pd.isna(git) or not git:
        return "unknown"
    commit, plus, rest = str(git).partition("+")
    return commit[:7] + plus + rest


def _counts(values: pd.Series) -> str:
    """``value (count)`` for each distinct value, in value order."""
    return ", ".join(f"{value} ({count})" for value, count in values.value_counts().sort_index().items())


def training_set_sizes(runs: pd.DataFrame) -> str:
    """Each task's training set size as the runs record it (``train_size``, after subsampling;
    runs made before it was recorded have none), or nothing if no run records one."""
    recorded = runs.dropna(subset="train_size")
    if recorded.empty:
        return ""
    sizes = recorded.groupby("task")["train_size"].agg(lambda n: " / ".join(map(str, sorted(set(n.astype(int))))))
    text = ", ".join(f"{task} {size}" for task, size in sizes.items())
    return f"Training set size (examples; LM: blocks), from the {len(recorded)} runs that record it: {text}. "


def torch_setups(runs: pd.DataFrame) -> str:
    """The torch version and thread count the runs ran with (runs made before they were recorded
    have none), or nothing if no run records them: on CPU a rerun gives the same digits only with both
    the same."""
    recorded = runs.dropna(subset=["torch_version", "torch_threads"])
    if recorded.empty:
        return ""
    setups = recorded["torch_version"] + ", " + recorded["torch_threads"].astype(int).astype(str) + " thread(s)"
    return f" Torch (a CPU run repeats its digits only with the same version and threads): {_counts(setups)}."


def duration(seconds: float) -> str:
    """Hours from one hour up, else minutes."""
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def header_line(
    runs: pd.DataFrame, which: str, dirs: Sequence[Path], averaged: Sequence[str], excluded: Counter | None = None
) -> str:
    seeds = sorted(runs["seed"].unique(), key=natural_key)
    metric_text = "best validation value over epochs" if which == "best" else "final validation value"
    walls = runs["wall_seconds"].dropna()
    wall_text = (
        f"Wall time: {duration(walls.sum())} over {len(walls)} runs ({walls.min():.0f}-{walls.max():.0f} s each). "
        if len(walls)
        else ""
    )
    excluded_text = (
        f"Left out (`--exclude-task`): {', '.join(f'{task} ({n} runs)' for task, n in sorted(excluded.items()))}. "
        if excluded
        else ""
    )
    return (
        f"{len(runs)} runs, seeds {', '.join(seeds)} (n per cell), from {', '.join(map(str, dirs))}. {excluded_text}"
        f"Metric: {metric_text} (`--metric {which}`), mean ± sample std over seeds; x100 except perplexity and loss. "
        f"Avg: mean of the per-task means of the main metric over {', '.join(averaged)}. "
        f"Δ: against `{BASELINE}` with the same other settings, positive = better. {wall_text}"
        f"Run tags (subsampling is noted there): {_counts(runs['tags'].explode().dropna()) or 'none'}. "
        f"{training_set_sizes(runs)}"
        f"Code (git commit, +dirty: uncommitted changes): {_counts(runs['git'].map(short_commit))}."
        f"{torch_setups(runs)}"
    )


def markdown_table(runs: pd.DataFrame, paper: dict[str, dict[str, list[float]]]) -> str:
    """Rows: each label, then its Δ row and (where the paper has numbers) its paper row."""
    cells = cell_table(runs)
    # a task's column is headed and scaled by its last label's metrics
    by_task = cells.reset_index().drop_duplicates("task", keep="last").set_index("task")
    tasks = list(by_task.index)
    avg, averaged = averages(runs)
    avg_delta = avg_deltas(runs, avg, averaged)
    avg_k, avg_d = by_task.loc[averaged[0], "scale"], by_task.loc[averaged[0], "digits"]
    text = cells.apply(format_cell, axis=1).unstack("task").reindex(columns=tasks)
    deltas = (cells["delta"] * cells["scale"]).unstack("task").reindex(columns=tasks)
    baselines = label_baselines(runs)

    def head(task: str) -> str:
        metric, second = by_task.loc[task, ["metric", "second_metric"]]
        return f"{task} ({metric if pd.isna(second) or metric in SINGLE_NUMBER_METRICS else f'{metric}/{second}'})"

    lines = ["| Model | " + " | ".join(map(head, tasks)) + " | Avg |", "|---" * (len(tasks) + 2) + "|"]
    for label in label_order(runs):
        row = [MISSING if pd.isna(cell) else cell for cell in text.loc[label]]
        lines.append(f"| {label} | " + " | ".join(row) + f" | {_fmt(avg.get(label, math.nan) * avg_k, digits=avg_d)} |")
        if deltas.loc[label].notna().any():
            row = [_fmt(deltas.loc[label, t], signed=True, digits=by_task.loc[t, "digits"]) for t in tasks]
            avg_text = _fmt(avg_delta.get(label, math.nan) * avg_k, signed=True, digits=avg_d)
            lines.append(f"| Δ {label} vs {baselines[label]} | " + " | ".join(row) + f" | {avg_text} |")
        reported = [paper.get(t, {}).get(label) for t in tasks]
        if any(reported):
            row = ["/".join(f"{x:.1f}" for x in numbers) if numbers else MISSING for numbers in reported]
            lines.append(f"| {label} (paper) | " + " | ".join(row) + f" | {MISSING} |")
    return "\n".join(lines)


def head_to_head_table(runs: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> str:
    """The Markdown head-to-head table, or "" when no pair has runs to compare."""
    rows = []
    for first, second in pairs:
        result = head_to_head(runs, first, second)
        if result is None:
            log.info("no task has runs of both %r and %r: no head-to-head row", first, second)
            continue
        d = digits(runs.loc[runs["label"] == first, "metric"].iloc[0])
        error = f" ± {_fmt(result.standard_error, digits=d)}" if len(result.paired) > 1 else ""
        p_value = MISSING if math.isnan(result.sign_test_p) else f"{result.sign_test_p:.3f}"
        mean = _fmt(result.mean, signed=True, digits=d)
        rows.append(
            f"| {first} vs {second} | {result.tasks_better} / {result.tasks_worse} "
            f"| {result.wins} / {result.losses} / {result.ties} | {mean}{error} | {p_value} |"
        )
    if not rows:
        return ""
    return "\n".join(
        [
            "## Head to head",
            "",
            "Over the averaged tasks. Paired runs: each run of the first label against the run of the second "
            "with the same task and seed (same data subsample, same seed); Δ in the units of the table, "
            "positive = first better. Sign test: two-sided exact binomial over the untied pairs.",
            "",
            "| comparison | tasks better / worse | paired runs better / worse / tied | mean paired Δ ± s.e. "
            "| sign test p |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )


def _csv_number(value: float) -> Any:
    # past 1e-6 is float noise; + 0.0 turns a noise-small negative's -0.0 into 0.0
    return "" if pd.isna(value) else round(float(value), 6) + 0.0


CSV_COLUMNS = (
    "task", "label", "metric", "mean", "std", "n", "seeds", "second_metric", "second_mean", "second_std",
    "delta_vs_topk", "paper", "paper_second", "wall_seconds_mean",
)  # fmt: skip


def csv_table(runs: pd.DataFrame, paper: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    """Runs' own units (fractions, perplexity); the Avg row per label has no std, n or seeds."""
    cells = cell_table(runs).reset_index()
    reported = [paper.get(task, {}).get(label) or [] for task, label in zip(cells["task"], cells["label"], strict=True)]
    cells["paper"] = [numbers[0] if numbers else math.nan for numbers in reported] / cells["scale"]
    second_scale = cells["second_metric"].map(scale, na_action="ignore")
    cells["paper_second"] = [numbers[1] if len(numbers) > 1 else math.nan for numbers in reported] / second_scale
    cells["second_metric"] = cells["second_metric"].fillna("")
    avg, averaged = averages(runs)
    avg_delta = avg_deltas(runs, avg, averaged)
    avg_rows = pd.DataFrame(
        {"task": "Avg", "label": label, "metric": "mean of main metrics", "mean": avg[label]}
        | {"delta": avg_delta.get(label, math.nan)}
        for label in label_order(runs)
        if label in avg
    )
    table = pd.concat([cells.astype({"label": str, "n": object}), avg_rows], ignore_index=True).astype(object)
    numbers = ["mean", "std", "second_mean", "second_std", "delta", "paper", "paper_second", "wall_seconds"]
    table[numbers] = table[numbers].map(_csv_number)
    table = table.rename(columns={"delta": "delta_vs_topk", "wall_seconds": "wall_seconds_mean"})
    return table[list(CSV_COLUMNS)].fillna("")


def sweep_command(sweep_dir: Path) -> str | None:
    """The command line of a multirun, from ``<sweep_dir>/multirun.yaml`` (Hydra's record of the
    sweep's overrides), quoted for a shell and without ``paths.*`` overrides (one machine's
    folders); None for a folder that holds no multirun."""
    try:
        overrides = yaml.safe_load((Path(sweep_dir) / "multirun.yaml").read_text())["hydra"]["overrides"]["task"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return shlex.join(["python", "train.py", "-m", *(o for o in overrides if not names_machine_paths(o))])


def commands_section(runs: pd.DataFrame) -> str:
    """Markdown: each multirun the runs came from, its command and how many of the runs it gave."""
    lines = []
    for sweep, count in runs["sweep"].value_counts().sort_index().items():
        command = sweep_command(sweep)
        lines.append(
            f"- `{command}`: {count} run(s), in `{sweep}`"
            if command
            else f"- {count} run(s) in `{sweep}`, not from a multirun (no readable multirun.yaml)"
        )
    return "\n".join(["Commands (each multirun the runs came from):", "", *lines])


def write_tables(
    runs: pd.DataFrame,
    records: Sequence[dict[str, Any]],
    which: str,
    dirs: Sequence[Path],
    out: Path,
    paper: dict[str, dict[str, list[float]]],
    pairs: Sequence[tuple[str, str]] = (),
    excluded: Counter | None = None,
) -> tuple[Path, Path]:
    """``<out>.md`` (with a head-to-head table for ``pairs``) and ``<out>.csv``, from the labelled
    ``runs`` (group_runs) and the run ``records`` the header describes."""
    _, averaged = averages(runs)
    described = run_table(records)
    md, csv_path = out.with_name(out.name + ".md"), out.with_name(out.name + ".csv")
    sections = [f"# {out.name}", header_line(described, which, dirs, averaged, excluded), markdown_table(runs, paper)]
    sections += [head_to_head_table(runs, pairs), commands_section(described)]
    md.write_text("\n\n".join(filter(None, sections)) + "\n")
    csv_table(runs, paper).to_csv(csv_path, index=False, lineterminator="\r\n")  # \r\n: the csv module's
    return md, csv_path


# ---------------------------------------------------------------- plots

LOAD_STATS = ("load_max", "load_min", "load_max_min_ratio", "dead_experts")
_LOAD_COLUMN = re.compile(r"moe/layer(\d+)/(" + "|".join(LOAD_STATS) + r")$")


def last_layer_loads(run_dir: Path) -> dict[tuple[int, str], float]:
    """(layer, stat) -> value at the last step that logged it, from the run's newest CSV log.

    An unreadable log leaves the run out of the heatmap with a note: a plot never stops the tables.
    """
    logs = sorted(run_dir.glob("csv/version_*/metrics.csv"), key=lambda p: natural_key(p.parent.name))
    if not logs:
        return {}
    try:
        logged = pd.read_csv(logs[-1])
        loads = logged[[column for column in logged.columns if _LOAD_COLUMN.match(column)]].apply(pd.to_numeric)
    except (OSError, ValueError) as error:
        log.warning("left %s out of the load heatmap: %s", logs[-1], error)
        return {}
    last = loads.ffill().iloc[-1].dropna() if len(loads) else pd.Series()  # each column's last logged value
    names = [_LOAD_COLUMN.match(column).groups() for column in last.index]
    return {(int(layer), stat): float(value) for (layer, stat), value in zip(names, last, strict=True)}


def load_matrices(runs: pd.DataFrame) -> dict[str, tuple[list[int], list[list[float]]]]:
    """label -> (MoE layer numbers, layers x LOAD_STATS averaged over the label's runs on all tasks).

    Labels without logs (the dense ``ffn``) are left out.
    """
    matrices = {}
    for label, run_dirs in runs.groupby("label", observed=True)["run_dir"]:
        loads = [pd.Series(loads) for loads in map(last_layer_loads, run_dirs) if loads]  # (layer, stat) -> value
        if not loads:
            continue
        # layers x stats, NaN where no run logged a stat
        matrix = pd.concat(loads, axis=1).mean(axis=1).unstack().reindex(columns=list(LOAD_STATS)).sort_index()
        matrices[label] = (matrix.index.tolist(), matrix.to_numpy().tolist())
    return matrices


def ranked_expert_loads(runs: pd.DataFrame) -> dict[str, tuple[list[str], list[list[float]], int]]:
    """label -> (MoE layer names, layers x experts from the busiest down, runs averaged).

    Each run's per-expert load (metrics.json's ``expert_load``, over its last validation) is sorted
    from the busiest expert down before the label's runs are averaged: expert numbers mean nothing
    across runs (any permutation of the experts is the same model), their ranking does.
    A label whose runs differ in expert count is left out with a note.
    """
    ranked = {}
    for label, loads in runs.dropna(subset="expert_load").groupby("label", observed=True)["expert_load"]:
        counts = {len(experts) for run in loads for experts in run.values()}
        if len(counts) > 1:
            log.warning("left %s out of the expert-load heatmap: its runs have %s experts", label, sorted(counts))
            continue
        layers = list(dict.fromkeys(layer for run in loads for layer in run))  # the model's order (encoder first)
        rows = [
            np.mean([sorted(run[layer], reverse=True) for run in loads if layer in run], axis=0).tolist()
            for layer in layers
        ]
        ranked[label] = (layers, rows, len(loads))
    return ranked


def _task_axes(plt, count: int):
    cols = min(count, 4)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _label_colors(plt, runs: pd.DataFrame) -> dict[str, str]:
    """One color per label, the same in every panel and plot (a task without some label's runs
    must not shift the others' colors)."""
    labels = label_order(runs)
    # beyond the default cycle's 10 colors, tab20's 20, so no two labels of a legend share one
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"] if len(labels) <= 10 else plt.get_cmap("tab20").colors
    return {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}


def _save(plt, fig, path: Path, **options) -> Path:
    fig.savefig(path, dpi=120, **options)
    plt.close(fig)
    return path


def plot_bars(plt, runs: pd.DataFrame, path: Path) -> Path:
    cells = cell_table(runs)
    colors = _label_colors(plt, runs)
    tasks = cells.index.unique("task")
    fig, axes = _task_axes(plt, len(tasks))
    for ax, (task, group) in zip(axes, cells.groupby("task"), strict=False):
        labels = group.index.get_level_values("label").astype(str)
        errors = (group["std"] * group["scale"]).fillna(0.0)
        ax.bar(range(len(group)), group["mean"] * group["scale"], yerr=errors, capsize=3, color=labels.map(colors))
        ax.set_xticks(range(len(group)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{task} ({group['metric'].iloc[0]})", fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_params(plt, runs: pd.DataFrame, path: Path) -> Path | None:
    cells = cell_table(runs).dropna(subset="active_params")
    if cells.empty:
        log.info("skipped %s: no run records params.active_per_token", path.name)
        return None
    colors = _label_colors(plt, runs)
    fig, axes = _task_axes(plt, len(cells.index.unique("task")))
    for ax, (task, group) in zip(axes, cells.groupby("task"), strict=False):
        for (_, label), cell in group.iterrows():
            x, y = cell["active_params"] / 1e6, cell["mean"] * cell["scale"]
            error = 0.0 if pd.isna(cell["std"]) else cell["std"] * cell["scale"]
            ax.errorbar(x, y, yerr=error, fmt="o", capsize=3, color=colors[label])
            ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.margins(x=0.25)  # room for the labels written beside the points
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("active params / token (M)", fontsize=8)
        ax.set_ylabel(group["metric"].iloc[0], fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_load(plt, runs: pd.DataFrame, path: Path) -> Path | None:
    """Colour = value / that statistic's largest value over all labels, so variants compare; text = value."""
    matrices = load_matrices(runs)
    if not matrices:
        log.info("skipped %s: no run has csv/version_*/metrics.csv with moe/layer*/load_* columns", path.name)
        return None
    every_row = pd.DataFrame([row for _, matrix in matrices.values() for row in matrix])
    peaks = every_row.abs().max().replace(0.0, 1.0).fillna(1.0).to_numpy()  # a stat never logged: NaN, drawn dark
    height = 0.45 * max(len(layers) for layers, _ in matrices.values()) + 1.8
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), height), squeeze=False)
    for ax, (label, (layers, matrix)) in zip(axes[0], matrices.items(), strict=True):
        shares = np.array(matrix) / peaks
        ax.imshow(shares, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for (i, j), value in np.ndenumerate(np.array(matrix)):
            dark = not shares[i, j] >= 0.6  # viridis is dark below ~0.6, and NaN is drawn dark
            ax.text(j, i, _fmt(value), ha="center", va="center", fontsize=7, color="w" if dark else "k")
        ax.set_xticks(range(len(LOAD_STATS)), LOAD_STATS, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(matrix)), [f"layer {layer}" for layer in layers], fontsize=8)
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_expert_load(plt, runs: pd.DataFrame, path: Path) -> Path | None:
    """One panel per label: MoE layers x experts ranked by load (see ranked_expert_loads), one colour scale."""
    ranked = ranked_expert_loads(runs)
    if not ranked:
        log.info("skipped %s: no run records expert_load in its metrics.json", path.name)
        return None
    peak = max(np.max(rows) for _, rows, _ in ranked.values())
    height = 0.35 * max(len(layers) for layers, _, _ in ranked.values()) + 1.8
    fig, axes = plt.subplots(1, len(ranked), figsize=(3.6 * len(ranked) + 0.8, height), squeeze=False)
    for ax, (label, (layers, rows, count)) in zip(axes[0], ranked.items(), strict=True):
        image = ax.imshow(rows, cmap="viridis", vmin=0, vmax=peak, aspect="auto")
        ax.set_yticks(range(len(layers)), layers, fontsize=7)
        ax.set_xlabel(f"expert, busiest first (uniform: 1/{len(rows[0])})", fontsize=8)
        ax.set_title(f"{label} ({count} run{'s' * (count > 1)})", fontsize=9)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.02, label="load share")
    return _save(plt, fig, path, bbox_inches="tight")


def plot_curves(plt, runs: pd.DataFrame, path: Path) -> Path | None:
    """Per task, the main metric at each validation against the training step: per label the mean
    over its runs (the steps all of them reached), and a band from the lowest to the highest run."""
    with_curves = runs.dropna(subset="history")
    if with_curves.empty:
        log.info("skipped %s: no run records a history of two or more validations", path.name)
        return None
    colors = _label_colors(plt, runs)
    fig, axes = _task_axes(plt, with_curves["task"].nunique())
    for ax, (task, group) in zip(axes, with_curves.groupby("task"), strict=False):
        for label, cell in group.groupby("label", observed=True):
            key, k = f"val/{cell['metric'].iloc[0]}", scale(cell["metric"].iloc[0])
            # steps x runs, at the steps every run reached
            curves = pd.concat([pd.Series({e["step"]: e[key] for e in h}) for h in cell["history"]], axis=1)
            curves = curves.dropna().sort_index() * k
            ax.plot(curves.index, curves.mean(axis=1), color=colors[label], label=f"{label} (n={len(cell)})",
                    linewidth=1.2)  # fmt: skip
            ax.fill_between(curves.index, curves.min(axis=1), curves.max(axis=1), color=colors[label], alpha=0.2,
                            linewidth=0)  # fmt: skip
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel(f"val/{group['metric'].iloc[0]}", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_grid(plt, runs: pd.DataFrame, path: Path) -> Path | None:
    """For labels that name N and k (``--by model.num_experts,model.top_k,model``): per task and
    variant a heatmap of the main metric's mean over seeds, N down, k across, one colour scale per
    task; labels without N and k (a dense reference row) are written in the title."""
    cells = cell_table(runs).reset_index()
    settings = pd.DataFrame([dict(part.split("=", 1) for part in parts) for parts in cells["settings"]])
    cells = cells.join(settings.reindex(columns=["N", "k"])).assign(
        variant=cells["label"].astype(str).str.split(" ").str[0]
    )
    grid = cells.dropna(subset=["N", "k"]).astype({"N": int, "k": int})
    if grid.empty:
        log.info("skipped %s: no label names N and k", path.name)
        return None
    metric = grid["metric"].iloc[0]
    k_scale = scale(metric)
    panels = grid.groupby(["task", "variant"])
    fig, axes = plt.subplots(1, panels.ngroups, figsize=(3.4 * panels.ngroups + 0.6, 3.4), squeeze=False)
    for ax, ((task, variant), panel) in zip(axes[0], panels, strict=True):
        means = panel.pivot(index="N", columns="k", values="mean").sort_index().sort_index(axis=1) * k_scale
        stds = panel.pivot(index="N", columns="k", values="std").reindex_like(means) * k_scale
        task_means = grid.loc[grid["task"] == task, "mean"] * k_scale
        cmap = "viridis_r" if metric_mode(metric) == "min" else "viridis"  # bright = better
        ax.imshow(means, cmap=cmap, vmin=task_means.min(), vmax=task_means.max(), aspect="auto")
        for (i, j), mean in np.ndenumerate(means.to_numpy()):
            if not np.isnan(mean):
                spread = "" if np.isnan(stds.iloc[i, j]) else f"\n± {stds.iloc[i, j]:.3f}"
                ax.text(j, i, f"{mean:.3f}{spread}", ha="center", va="center", fontsize=7, color="k",
                        bbox={"facecolor": "w", "alpha": 0.6, "linewidth": 0})  # fmt: skip
        ax.set_xticks(range(len(means.columns)), [f"k={k}" for k in means.columns], fontsize=8)
        ax.set_yticks(range(len(means.index)), [f"N={n}" for n in means.index], fontsize=8)
        references = cells[(cells["task"] == task) & (cells["settings"].map(len) == 0)]
        note = "; ".join(f"{row.label} {row.mean * k_scale:.3f}" for row in references.itertuples())
        ax.set_title(f"{task}: {variant} ({metric})" + (f"\n{note}" if note else ""), fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, path)


def write_plots(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Every plot whose data exists; a missing matplotlib or missing data is a logged note, not a failure."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("skipped the plots: matplotlib is not installed (pip install matplotlib)")
        return []
    plots = {"bars": plot_bars, "params": plot_params, "load": plot_load, "expert_load": plot_expert_load,
             "curves": plot_curves, "grid": plot_grid}  # fmt: skip
    made = [plot(plt, runs, out.with_name(f"{out.name}_{name}.png")) for name, plot in plots.items()]
    return [path for path in made if path is not None]


# ---------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs_dirs", nargs="+", type=Path, metavar="RUNS_DIR", help="searched for **/metrics.json")
    parser.add_argument(
        "--out", type=Path, required=True, help="output prefix: writes <out>.md, <out>.csv, <out>_*.png"
    )
    parser.add_argument("--tag", action="append", default=[], help="keep runs with this tag (repeat: all of them)")
    parser.add_argument(
        "--exclude-task",
        action="append",
        default=[],
        metavar="TASK",
        help="leave out this task's runs, e.g. multirc or superglue/multirc (repeat for more); the header says so",
    )
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="RUNS_DIR:MODEL",
        help="also the runs of variant MODEL under RUNS_DIR, whatever their tags (a dense reference row)",
    )
    parser.add_argument("--by", default="model", help="comma-separated dotted keys into the run record for the label")
    parser.add_argument("--metric", choices=("best", "final"), default="best", help="best-over-epochs or last value")
    parser.add_argument("--paper", type=Path, default=PAPER_NUMBERS, help="the paper's reported numbers (YAML)")
    parser.add_argument(
        "--compare",
        help=f"comma-separated LABEL:LABEL pairs for the head-to-head table ('' for none; default {DEFAULT_PAIRS}, "
        "each where both labels have runs)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Write the tables and plots; return their paths."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    by = [key.strip() for key in args.by.split(",") if key.strip()]
    try:
        records, excluded = exclude_tasks(
            collect(args.runs_dirs, args.tag) + references(args.reference), args.exclude_task
        )
        runs = group_runs(records, by, args.metric)
        paper = load_paper_numbers(args.paper)
        pairs = parse_pairs(DEFAULT_PAIRS if args.compare is None else args.compare)
        if args.compare is not None:
            check_pair_labels(pairs, label_order(runs))
    except RunsError as error:
        raise SystemExit(f"make_table: {error}") from error
    if cell_table(runs)["delta"].isna().all():
        log.info("no %r cell shares a task and the other --by values with another label: no deltas", BASELINE)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tables = write_tables(runs, records, args.metric, args.runs_dirs, args.out, paper, pairs, excluded)
    written = [*tables, *write_plots(runs, args.out)]
    log.info("wrote %s", ", ".join(map(str, written)))
    return written


if __name__ == "__main__":
    main()
