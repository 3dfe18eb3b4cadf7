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
  each multirun the runs came from (its ``multirun.yaml``), with how many of the runs it gave.
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
import csv
import json
import logging
import math
import re
import shlex
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hypermoe.data.metrics import metric_mode

log = logging.getLogger("make_table")

PAPER_NUMBERS = Path(__file__).resolve().parent / "paper_numbers.yaml"
BASELINE = "topk"
# their value leads the label, bare: the variant, or the conf/ablation row (whose reference row is topk)
VARIANT_KEYS = ("model", "model_config.variant", "ablation")
SHORT_NAMES = {"num_experts": "N", "top_k": "k"}
SINGLE_NUMBER_TASKS = {"glue/cola"}  # GLUE papers print CoLA as Matthews only
MISSING = "-"  # a cell with no runs, or a number that does not exist (std of one seed)
LOAD_STATS = ("load_max", "load_min", "load_max_min_ratio", "dead_experts")
_LOAD_COLUMN = re.compile(r"moe/layer(\d+)/(" + "|".join(LOAD_STATS) + r")$")


class RunsError(Exception):
    """A problem with the runs given, worded for the person who gave them; main exits with it."""


@dataclass
class Cell:
    """The runs of one (task, label): what one table cell and one CSV row summarise."""

    task: str
    label: str
    baseline: str | None  # the label this one's delta is taken against
    metric: str
    second_metric: str | None
    values: list[float] = field(default_factory=list)
    second_values: list[float] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)  # as text: 1 and "1" are one seed
    active_params: list[int] = field(default_factory=list)
    wall_seconds: list[float] = field(default_factory=list)  # each run's, start to metrics.json
    run_dirs: list[Path] = field(default_factory=list)
    expert_loads: list[dict[str, list[float]]] = field(default_factory=list)  # per run that records one
    histories: list[list[dict[str, float]]] = field(default_factory=list)  # per run: every validation, by step
    settings: tuple[str, ...] = ()  # the label's parts besides the variant (N=4, k=1)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample std (n - 1): NaN for a single seed, which has no spread to report."""
        return statistics.stdev(self.values) if self.n > 1 else math.nan

    @property
    def second_mean(self) -> float:
        return statistics.fmean(self.second_values) if self.second_values else math.nan

    @property
    def second_std(self) -> float:
        return statistics.stdev(self.second_values) if len(self.second_values) > 1 else math.nan

    @property
    def higher_is_better(self) -> bool:
        return metric_mode(self.metric) == "max"

    def by_seed(self) -> dict[str, float]:
        """Seed -> main metric, the mean where a seed ran more than once (group_runs warns)."""
        values: dict[str, list[float]] = defaultdict(list)
        for seed, value in zip(self.seeds, self.values, strict=True):
            values[seed].append(value)
        return {seed: statistics.fmean(runs) for seed, runs in values.items()}


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
    except (OSError, json.JSONDecodeError) as error:
        raise RunsError(f"{path}: malformed metrics.json ({error})") from error
    if not isinstance(record, dict):
        raise RunsError(f"{path}: malformed metrics.json (not a JSON object)")
    missing = [key for key in ("task", "model", "seed", "main_metric") if key not in record]
    if missing:
        raise RunsError(f"{path}: malformed metrics.json (no {', '.join(missing)})")
    record["_file"] = Path(path)
    return record


def collect(dirs: Sequence[Path], tags: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The runs under ``dirs`` that carry every tag in ``tags``."""
    runs = [load_run(path) for path in find_metric_files(dirs)]
    kept = [run for run in runs if set(tags) <= set(run.get("tags") or ())]
    if not kept:
        raise RunsError(f"none of the {len(runs)} runs under {', '.join(map(str, dirs))} has tags {list(tags)}")
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


# ---------------------------------------------------------------- grouping


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


def metric_value(record: dict[str, Any], name: str, which: str) -> float | None:
    """``best``: the best validation value over epochs; ``final``: the last validation value."""
    value = (record.get("best") or {}).get(name) if which == "best" else (record.get("final") or {}).get(f"val/{name}")
    return None if value is None else float(value)


def second_metric(record: dict[str, Any]) -> str | None:
    """The task's other metric: ``best`` lists the task's metrics in order, main metric first."""
    others = [name for name in record.get("best") or {} if name != record["main_metric"]]
    return others[0] if others else None


def group_runs(runs: Iterable[dict[str, Any]], by: Sequence[str], which: str) -> list[Cell]:
    """One Cell per (task, label), in task then label order."""
    check_by(by)
    cells: dict[tuple[str, str], Cell] = {}
    for run in runs:
        variant, others = label_parts(run, by)
        label = join_label(variant, others)
        key = (run["task"], label)
        if key not in cells:
            baseline = join_label(BASELINE, others) if variant else None
            cells[key] = Cell(run["task"], label, baseline, run["main_metric"], second_metric(run), settings=others)
        cell = cells[key]
        value = metric_value(run, cell.metric, which)
        if value is None:
            raise RunsError(f"{run['_file']}: malformed metrics.json (no {which} value of {cell.metric!r})")
        cell.values.append(value)
        second = metric_value(run, cell.second_metric, which) if cell.second_metric else None
        if second is not None:
            cell.second_values.append(second)
        cell.seeds.append(str(run["seed"]))
        cell.run_dirs.append(run["_file"].parent)
        active = resolve(run, "params.active_per_token")
        if active is not None:
            cell.active_params.append(int(active))
        if run.get("wall_seconds") is not None:
            cell.wall_seconds.append(float(run["wall_seconds"]))
        if run.get("expert_load"):
            cell.expert_loads.append(run["expert_load"])
        if len(run.get("history") or []) > 1:
            cell.histories.append(run["history"])
    for cell in cells.values():
        repeated = [seed for seed, count in Counter(cell.seeds).items() if count > 1]
        if repeated:
            log.warning("%s / %s: seed(s) %s appear more than once; all are averaged", cell.task, cell.label, repeated)
    return [cells[key] for key in sorted(cells, key=lambda k: (k[0], label_key(k[1])))]


def natural_key(text: Any) -> list:
    """Sorts ``N=8`` before ``N=16`` and job folder ``2`` before ``10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def label_key(label: str) -> tuple:
    """Baseline labels first (the rows the others are read against), the rest in natural order."""
    return label.split(" ")[0] != BASELINE, natural_key(label)


def label_order(cells: Sequence[Cell]) -> list[str]:
    return sorted({cell.label for cell in cells}, key=label_key)


# ---------------------------------------------------------------- numbers


def signed_delta(value: float, baseline: float, higher_is_better: bool) -> float:
    """Positive when ``value`` is better than ``baseline``: for perplexity that is baseline - value."""
    return value - baseline if higher_is_better else baseline - value


def averages(cells: Sequence[Cell]) -> tuple[dict[str, float], list[str]]:
    """Per label, the mean of its per-task means over the averaged tasks; and those tasks.

    Perplexity does not average with accuracies, so when the tasks mix metric directions only the
    higher-is-better ones are averaged. A label missing one of those tasks gets no Avg rather than
    an average over fewer tasks, which would not compare with the others.
    """
    tasks = sorted({cell.task for cell in cells})
    higher = sorted({cell.task for cell in cells if cell.higher_is_better})
    averaged = higher or tasks
    by_label: dict[str, dict[str, float]] = defaultdict(dict)
    for cell in cells:
        by_label[cell.label][cell.task] = cell.mean
    avg = {
        label: statistics.fmean(means[task] for task in averaged)
        for label, means in by_label.items()
        if all(task in means for task in averaged)
    }
    return avg, averaged


def deltas(cells: Sequence[Cell]) -> dict[tuple[str, str], float]:
    """(task, label) -> delta against the cell of the label's baseline on the same task (none for baselines)."""
    index = {(cell.task, cell.label): cell for cell in cells}
    out = {}
    for cell in cells:
        base = index.get((cell.task, cell.baseline))
        if base is not None and base is not cell:
            out[cell.task, cell.label] = signed_delta(cell.mean, base.mean, cell.higher_is_better)
    return out


def avg_deltas(cells: Sequence[Cell], avg: dict[str, float], averaged: Sequence[str]) -> dict[str, float]:
    baselines = {cell.label: cell.baseline for cell in cells}
    higher = any(cell.higher_is_better for cell in cells if cell.task in averaged)
    return {
        label: signed_delta(value, avg[baselines[label]], higher)
        for label, value in avg.items()
        if baselines.get(label) in avg and baselines[label] != label
    }


@dataclass
class HeadToHead:
    """Label ``first`` against label ``second`` on the averaged tasks both have runs for."""

    first: str
    second: str
    tasks_better: int
    tasks_worse: int
    paired: list[float]  # signed delta of each (task, seed) both labels ran, in display units
    # (tasks better/worse compare the labels' means over all their seeds)

    @property
    def wins(self) -> int:
        return sum(delta > TIE for delta in self.paired)

    @property
    def losses(self) -> int:
        return sum(delta < -TIE for delta in self.paired)

    @property
    def ties(self) -> int:
        return len(self.paired) - self.wins - self.losses

    @property
    def mean(self) -> float:
        return statistics.fmean(self.paired) if self.paired else math.nan  # no seed ran for both

    @property
    def standard_error(self) -> float:
        return statistics.stdev(self.paired) / math.sqrt(len(self.paired)) if len(self.paired) > 1 else math.nan

    @property
    def sign_test_p(self) -> float:
        """Two-sided exact binomial test of wins against losses (ties dropped), p = 0.5."""
        n, k = self.wins + self.losses, min(self.wins, self.losses)
        if n == 0:
            return math.nan
        return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


TIE = 1e-9  # metric values are exact fractions of a dev set: closer than this is the same score


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """``a:b,c:d`` -> [(a, b), (c, d)]."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        first, sep, second = item.partition(":")
        if not sep or not first.strip() or not second.strip():
            raise RunsError(f"--compare {text!r}: {item!r} is not LABEL:LABEL")
        pairs.append((first.strip(), second.strip()))
    return pairs


def head_to_head(cells: Sequence[Cell], first: str, second: str) -> HeadToHead | None:
    """None when the two labels share no averaged task."""
    _, averaged = averages(cells)
    index = {(cell.task, cell.label): cell for cell in cells}
    shared = [task for task in averaged if (task, first) in index and (task, second) in index]
    if not shared:
        return None
    better = worse = 0
    paired = []
    for task in shared:
        a, b = index[task, first], index[task, second]
        delta = signed_delta(a.mean, b.mean, a.higher_is_better)
        better, worse = better + (delta > TIE), worse + (delta < -TIE)
        ours, theirs = a.by_seed(), b.by_seed()
        for seed in sorted(ours.keys() & theirs.keys(), key=natural_key):  # one pair per seed
            paired.append(signed_delta(ours[seed], theirs[seed], a.higher_is_better) * scale(a.metric))
    return HeadToHead(first, second, better, worse, paired)


def head_to_head_table(cells: Sequence[Cell], pairs: Sequence[tuple[str, str]]) -> str:
    """The Markdown head-to-head table, or "" when no pair has runs to compare."""
    rows = []
    for first, second in pairs:
        result = head_to_head(cells, first, second)
        if result is None:
            log.info("no task has runs of both %r and %r: no head-to-head row", first, second)
            continue
        d = digits(next(c.metric for c in cells if c.label == first))
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


def scale(metric: str) -> float:
    """Display factor: fractions print as percentages, as in the papers; perplexity as is."""
    return 1.0 if metric_mode(metric) == "min" else 100.0


def load_paper_numbers(path: Path = PAPER_NUMBERS) -> dict[str, dict[str, list[float]]]:
    """``task -> variant -> [main]`` or ``[main, second]``, in the paper's printed units."""
    if not Path(path).exists():
        return {}
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
    if math.isnan(value):
        return MISSING
    value = round(value, digits) + 0.0  # + 0.0: a value that rounds to -0.00 prints as 0.00
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def digits(metric: str) -> int:
    """Decimals printed: a loss in nats differs between variants in its second decimal, so 3."""
    return 3 if metric == "loss" else 2


def format_cell(cell: Cell) -> str:
    """``mean ± std / second (n=3)``, x100 for fractions; the std belongs to the main metric."""
    k = scale(cell.metric)
    d = digits(cell.metric)
    text = _fmt(cell.mean * k, digits=d) + (f" ± {_fmt(cell.std * k, digits=d)}" if cell.n > 1 else "")
    if cell.second_values and cell.task not in SINGLE_NUMBER_TASKS:
        text += f" / {_fmt(cell.second_mean * scale(cell.second_metric))}"
    return f"{text} (n={cell.n})"


def short_commit(git: str | None) -> str:
    """A run's git field, ``<full hash>`` or ``<full hash>+dirty`` (uncommitted changes), with
    the hash cut to 7 characters; ``unknown`` for runs that have none."""
    if not git:
        return "unknown"
    commit, plus, rest = str(git).partition("+")
    return commit[:7] + plus + rest


def training_set_sizes(runs: Sequence[dict[str, Any]]) -> str:
    """Each task's training set size as the runs record it (``train_size``, after subsampling;
    runs made before it was recorded have none), or nothing if no run records one."""
    sizes: dict[str, set[int]] = defaultdict(set)
    for run in runs:
        if run.get("train_size") is not None:
            sizes[run["task"]].add(int(run["train_size"]))
    if not sizes:
        return ""
    recorded = sum(run.get("train_size") is not None for run in runs)
    text = ", ".join(f"{task} {' / '.join(map(str, sorted(n)))}" for task, n in sorted(sizes.items()))
    return f"Training set size (examples; LM: blocks), from the {recorded} runs that record it: {text}. "


def header_line(
    runs: Sequence[dict[str, Any]],
    which: str,
    dirs: Sequence[Path],
    averaged: Sequence[str],
    excluded: Counter | None = None,
) -> str:
    seeds = sorted({str(run["seed"]) for run in runs}, key=natural_key)
    tags = Counter(tag for run in runs for tag in run.get("tags") or ())
    tag_text = ", ".join(f"{tag} ({count})" for tag, count in sorted(tags.items())) or "none"
    metric_text = "best validation value over epochs" if which == "best" else "final validation value"
    walls = [float(run["wall_seconds"]) for run in runs if run.get("wall_seconds") is not None]
    wall_text = (
        f"Wall time: {sum(walls) / 3600:.1f} h over {len(walls)} runs ({min(walls):.0f}-{max(walls):.0f} s each). "
        if walls
        else ""
    )
    train_text = training_set_sizes(runs)
    commits = Counter(short_commit(run.get("git")) for run in runs)
    code_text = ", ".join(f"{commit} ({count})" for commit, count in sorted(commits.items()))
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
        f"Run tags (subsampling is noted there): {tag_text}. {train_text}"
        f"Code (git commit, +dirty: uncommitted changes): {code_text}."
    )


def markdown_table(cells: Sequence[Cell], paper: dict[str, dict[str, list[float]]]) -> str:
    """Rows: each label, then its Δ row and (where the paper has numbers) its paper row."""
    tasks = sorted({cell.task for cell in cells})
    metrics = {cell.task: cell for cell in cells}
    index = {(cell.task, cell.label): cell for cell in cells}
    avg, averaged = averages(cells)
    delta, avg_delta = deltas(cells), avg_deltas(cells, avg, averaged)
    baselines = {cell.label: cell.baseline for cell in cells}

    def head(task: str) -> str:
        cell = metrics[task]
        shown = (
            cell.metric
            if not cell.second_metric or task in SINGLE_NUMBER_TASKS
            else f"{cell.metric}/{cell.second_metric}"
        )
        return f"{task} ({shown})"

    lines = ["| Model | " + " | ".join(head(t) for t in tasks) + " | Avg |", "|---" * (len(tasks) + 2) + "|"]
    avg_k, avg_d = scale(metrics[averaged[0]].metric), digits(metrics[averaged[0]].metric)
    for label in label_order(cells):
        cells_row = [format_cell(index[t, label]) if (t, label) in index else MISSING for t in tasks]
        avg_text = _fmt(avg.get(label, math.nan) * avg_k, digits=avg_d)
        lines.append(f"| {label} | " + " | ".join(cells_row) + f" | {avg_text} |")
        if any((t, label) in delta for t in tasks):
            row = [
                _fmt(
                    delta.get((t, label), math.nan) * scale(metrics[t].metric),
                    signed=True,
                    digits=digits(metrics[t].metric),
                )
                for t in tasks
            ]
            avg_text = _fmt(avg_delta.get(label, math.nan) * avg_k, signed=True, digits=avg_d)
            lines.append(f"| Δ {label} vs {baselines[label]} | " + " | ".join(row) + f" | {avg_text} |")
        reported = [paper.get(t, {}).get(label) for t in tasks]
        if any(reported):
            row = ["/".join(f"{x:.1f}" for x in numbers) if numbers else MISSING for numbers in reported]
            lines.append(f"| {label} (paper) | " + " | ".join(row) + f" | {MISSING} |")
    return "\n".join(lines)


CSV_COLUMNS = (
    "task", "label", "metric", "mean", "std", "n", "seeds", "second_metric", "second_mean", "second_std",
    "delta_vs_topk", "paper", "paper_second", "wall_seconds_mean",
)  # fmt: skip


def csv_rows(cells: Sequence[Cell], paper: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Runs' own units (fractions, perplexity); the Avg row per label has no std, n or seeds."""
    avg, averaged = averages(cells)
    delta, avg_delta = deltas(cells), avg_deltas(cells, avg, averaged)

    def num(value: float | None) -> Any:
        # past 1e-6 is float noise; + 0.0 turns a noise-small negative's -0.0 into 0.0
        return "" if value is None or math.isnan(value) else round(value, 6) + 0.0

    rows = []
    for cell in cells:
        reported = paper.get(cell.task, {}).get(cell.label) or []
        rows.append(
            {
                "task": cell.task,
                "label": cell.label,
                "metric": cell.metric,
                "mean": num(cell.mean),
                "std": num(cell.std),
                "n": cell.n,
                "seeds": " ".join(sorted(map(str, cell.seeds), key=natural_key)),
                "second_metric": cell.second_metric or "",
                "second_mean": num(cell.second_mean),
                "second_std": num(cell.second_std),
                "delta_vs_topk": num(delta.get((cell.task, cell.label))),
                "paper": num(reported[0] / scale(cell.metric)) if reported else "",
                "paper_second": num(reported[1] / scale(cell.second_metric)) if len(reported) > 1 else "",
                "wall_seconds_mean": num(statistics.fmean(cell.wall_seconds)) if cell.wall_seconds else "",
            }
        )
    for label in label_order(cells):
        if label in avg:
            rows.append(
                dict.fromkeys(CSV_COLUMNS, "")
                | {"task": "Avg", "label": label, "metric": "mean of main metrics", "mean": num(avg[label])}
                | {"delta_vs_topk": num(avg_delta.get(label))}
            )
    return rows


def shown_path(path: Path) -> Path:
    """``path`` relative to the working directory when under it (the tables' own folder names)."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def sweep_command(sweep_dir: Path) -> str | None:
    """The command line of a multirun, from ``<sweep_dir>/multirun.yaml`` (Hydra's record of the
    sweep's overrides), quoted for a shell; None for a folder that holds no multirun."""
    try:
        overrides = yaml.safe_load((sweep_dir / "multirun.yaml").read_text())["hydra"]["overrides"]["task"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return shlex.join(["python", "train.py", "-m", *overrides])


def commands_section(runs: Sequence[dict[str, Any]]) -> str:
    """Markdown: each multirun the runs came from, its command and how many of the runs it gave."""
    sweeps = Counter(shown_path(run["_file"].parent.parent) for run in runs)  # <sweep>/<job>/metrics.json
    lines = []
    for sweep, count in sorted(sweeps.items(), key=lambda item: str(item[0])):
        command = sweep_command(sweep)
        lines.append(
            f"- `{command}`: {count} run(s), in `{sweep}`"
            if command
            else f"- {count} run(s) in `{sweep}`, not from a multirun (no readable multirun.yaml)"
        )
    return "\n".join(["Commands (each multirun the runs came from):", "", *lines])


def write_tables(
    cells: Sequence[Cell],
    runs: Sequence[dict[str, Any]],
    which: str,
    dirs: Sequence[Path],
    out: Path,
    paper: dict[str, dict[str, list[float]]],
    pairs: Sequence[tuple[str, str]] = (),
    excluded: Counter | None = None,
) -> tuple[Path, Path]:
    """``<out>.md`` (with a head-to-head table for ``pairs``) and ``<out>.csv``."""
    _, averaged = averages(cells)
    md, csv_path = out.with_name(out.name + ".md"), out.with_name(out.name + ".csv")
    header = header_line(runs, which, dirs, averaged, excluded)
    sections = [f"# {out.name}", header, markdown_table(cells, paper)]
    sections += [head_to_head_table(cells, pairs), commands_section(runs)]
    md.write_text("\n\n".join(filter(None, sections)) + "\n")
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(cells, paper))
    return md, csv_path


# ---------------------------------------------------------------- plots


def last_layer_loads(run_dir: Path) -> dict[tuple[int, str], float]:
    """(layer, stat) -> value at the last step that logged it, from the run's newest CSV log.

    An unreadable log leaves the run out of the heatmap with a note: a plot never stops the tables.
    """
    logs = sorted(run_dir.glob("csv/version_*/metrics.csv"), key=lambda p: natural_key(p.parent.name))
    if not logs:
        return {}
    loads: dict[tuple[int, str], float] = {}
    try:
        with logs[-1].open(newline="") as handle:
            for row in csv.DictReader(handle):
                for column, value in row.items():
                    match = _LOAD_COLUMN.match(column or "")
                    if match and value not in ("", None):
                        loads[int(match.group(1)), match.group(2)] = float(value)
    except (OSError, ValueError, csv.Error) as error:
        log.warning("left %s out of the load heatmap: %s", logs[-1], error)
        return {}
    return loads


def load_matrices(cells: Sequence[Cell]) -> dict[str, tuple[list[int], list[list[float]]]]:
    """label -> (MoE layer numbers, layers x LOAD_STATS averaged over the label's runs on all tasks).

    Labels without logs (the dense ``ffn``) are left out.
    """
    per_label: dict[str, list[dict]] = defaultdict(list)
    for cell in cells:
        for run_dir in cell.run_dirs:
            loads = last_layer_loads(run_dir)
            if loads:
                per_label[cell.label].append(loads)
    matrices = {}
    for label in label_order(cells):
        runs = per_label.get(label)
        if not runs:
            continue
        layers = sorted({layer for loads in runs for layer, _ in loads})
        matrices[label] = (
            layers,
            [
                [_nanmean([loads.get((layer, stat), math.nan) for loads in runs]) for stat in LOAD_STATS]
                for layer in layers
            ],
        )
    return matrices


def ranked_expert_loads(cells: Sequence[Cell]) -> dict[str, tuple[list[str], list[list[float]], int]]:
    """label -> (MoE layer names, layers x experts from the busiest down, runs averaged).

    Each run's per-expert load (metrics.json's ``expert_load``, over its last validation) is sorted
    from the busiest expert down before the label's runs are averaged: expert numbers mean nothing
    across runs (any permutation of the experts is the same model), their ranking does.
    A label whose runs differ in expert count is left out with a note.
    """
    per_label: dict[str, list[dict[str, list[float]]]] = defaultdict(list)
    for cell in cells:
        per_label[cell.label].extend(cell.expert_loads)
    ranked = {}
    for label in label_order(cells):
        runs = per_label.get(label)
        if not runs:
            continue
        counts = {len(loads) for run in runs for loads in run.values()}
        if len(counts) > 1:
            log.warning("left %s out of the expert-load heatmap: its runs have %s experts", label, sorted(counts))
            continue
        layers = list(dict.fromkeys(layer for run in runs for layer in run))  # the model's order (encoder first)
        rows = []
        for layer in layers:
            ranked_runs = [sorted(run[layer], reverse=True) for run in runs if layer in run]
            rows.append([statistics.fmean(rank) for rank in zip(*ranked_runs, strict=True)])
        ranked[label] = (layers, rows, len(runs))
    return ranked


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return statistics.fmean(kept) if kept else math.nan


def _task_axes(plt, count: int):
    cols = min(count, 4)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def plot_bars(plt, cells: Sequence[Cell], path: Path) -> Path:
    tasks, labels = sorted({c.task for c in cells}), label_order(cells)
    index = {(c.task, c.label): c for c in cells}
    colors = _label_colors(plt, cells)
    fig, axes = _task_axes(plt, len(tasks))
    for ax, task in zip(axes, tasks, strict=False):
        present = [label for label in labels if (task, label) in index]
        group = [index[task, label] for label in present]
        k = scale(group[0].metric)
        errors = [0.0 if math.isnan(c.std) else c.std * k for c in group]
        means = [c.mean * k for c in group]
        ax.bar(range(len(group)), means, yerr=errors, capsize=3, color=[colors[label] for label in present])
        ax.set_xticks(range(len(group)), present, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{task} ({group[0].metric})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_params(plt, cells: Sequence[Cell], path: Path) -> Path | None:
    with_params = [c for c in cells if c.active_params]
    if not with_params:
        log.info("skipped %s: no run records params.active_per_token", path.name)
        return None
    tasks = sorted({c.task for c in with_params})
    colors = _label_colors(plt, cells)
    fig, axes = _task_axes(plt, len(tasks))
    for ax, task in zip(axes, tasks, strict=False):
        for cell in (c for c in with_params if c.task == task):
            k, x = scale(cell.metric), statistics.fmean(cell.active_params) / 1e6
            error = 0.0 if math.isnan(cell.std) else cell.std * k
            ax.errorbar(x, cell.mean * k, yerr=error, fmt="o", capsize=3, color=colors[cell.label])
            ax.annotate(cell.label, (x, cell.mean * k), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.margins(x=0.25)  # room for the labels written beside the points
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("active params / token (M)", fontsize=8)
        ax.set_ylabel(next(c.metric for c in with_params if c.task == task), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_load(plt, cells: Sequence[Cell], path: Path) -> Path | None:
    """Colour = value / that statistic's largest value over all labels, so variants compare; text = value."""
    matrices = load_matrices(cells)
    if not matrices:
        log.info("skipped %s: no run has csv/version_*/metrics.csv with moe/layer*/load_* columns", path.name)
        return None
    peaks = [
        max((abs(row[j]) for _, m in matrices.values() for row in m if not math.isnan(row[j])), default=0.0) or 1.0
        for j in range(len(LOAD_STATS))
    ]
    height = 0.45 * max(len(layers) for layers, _ in matrices.values()) + 1.8
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), height), squeeze=False)
    for ax, (label, (layers, matrix)) in zip(axes[0], matrices.items(), strict=True):
        ax.imshow(
            [[v / peak for v, peak in zip(row, peaks, strict=True)] for row in matrix],
            cmap="viridis",
            vmin=0,
            vmax=1,
            aspect="auto",
        )
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                dark = math.isnan(value) or value / peaks[j] < 0.6  # viridis is dark below ~0.6
                ax.text(j, i, _fmt(value), ha="center", va="center", fontsize=7, color="w" if dark else "k")
        ax.set_xticks(range(len(LOAD_STATS)), LOAD_STATS, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(matrix)), [f"layer {layer}" for layer in layers], fontsize=8)
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_expert_load(plt, cells: Sequence[Cell], path: Path) -> Path | None:
    """One panel per label: MoE layers x experts ranked by load (see ranked_expert_loads), one colour scale."""
    ranked = ranked_expert_loads(cells)
    if not ranked:
        log.info("skipped %s: no run records expert_load in its metrics.json", path.name)
        return None
    peak = max(value for _, rows, _ in ranked.values() for row in rows for value in row)
    height = 0.35 * max(len(layers) for layers, _, _ in ranked.values()) + 1.8
    fig, axes = plt.subplots(1, len(ranked), figsize=(3.6 * len(ranked) + 0.8, height), squeeze=False)
    for ax, (label, (layers, rows, runs)) in zip(axes[0], ranked.items(), strict=True):
        image = ax.imshow(rows, cmap="viridis", vmin=0, vmax=peak, aspect="auto")
        ax.set_yticks(range(len(layers)), layers, fontsize=7)
        ax.set_xlabel(f"expert, busiest first (uniform: 1/{len(rows[0])})", fontsize=8)
        ax.set_title(f"{label} ({runs} run{'s' * (runs > 1)})", fontsize=9)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.02, label="load share")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_curves(plt, cells: Sequence[Cell], path: Path) -> Path | None:
    """Per task, the main metric at each validation against the training step: per label the mean
    over its runs (the steps all of them reached), and a band from the lowest to the highest run."""
    with_curves = [c for c in cells if c.histories]
    if not with_curves:
        log.info("skipped %s: no run records a history of two or more validations", path.name)
        return None
    tasks = sorted({c.task for c in with_curves})
    colors = _label_colors(plt, cells)
    fig, axes = _task_axes(plt, len(tasks))
    for ax, task in zip(axes, tasks, strict=False):
        for cell in (c for c in with_curves if c.task == task):
            key, k = f"val/{cell.metric}", scale(cell.metric)
            runs = [{entry["step"]: entry[key] for entry in history} for history in cell.histories]
            steps = sorted(set.intersection(*(set(run) for run in runs)))
            values = [[run[step] * k for run in runs] for step in steps]
            ax.plot(steps, [statistics.fmean(v) for v in values], color=colors[cell.label],
                    label=f"{cell.label} (n={len(runs)})", linewidth=1.2)  # fmt: skip
            ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=colors[cell.label],
                            alpha=0.2, linewidth=0)  # fmt: skip
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel(f"val/{next(c.metric for c in with_curves if c.task == task)}", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _setting(cell: Cell, name: str) -> str | None:
    return next((part.split("=", 1)[1] for part in cell.settings if part.startswith(f"{name}=")), None)


def plot_grid(plt, cells: Sequence[Cell], path: Path) -> Path | None:
    """For labels that name N and k (``--by model.num_experts,model.top_k,model``): per task and
    variant a heatmap of the main metric's mean over seeds, N down, k across, one colour scale per
    task; labels without N and k (a dense reference row) are written in the title."""
    grid = [c for c in cells if _setting(c, "N") is not None and _setting(c, "k") is not None]
    if not grid:
        log.info("skipped %s: no label names N and k", path.name)
        return None
    panels = sorted({(c.task, c.label.split(" ")[0]) for c in grid})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.6, 3.4), squeeze=False)
    for ax, (task, variant) in zip(axes[0], panels, strict=True):
        mine = {(_setting(c, "N"), _setting(c, "k")): c for c in grid if c.task == task and c.label.startswith(variant)}
        ns, ks = sorted({n for n, _ in mine}, key=int), sorted({k for _, k in mine}, key=int)
        k_scale = scale(grid[0].metric)
        task_means = [c.mean * k_scale for c in grid if c.task == task]
        matrix = [[mine[n, k].mean * k_scale if (n, k) in mine else math.nan for k in ks] for n in ns]
        cmap = "viridis_r" if metric_mode(grid[0].metric) == "min" else "viridis"  # bright = better
        ax.imshow(matrix, cmap=cmap, vmin=min(task_means), vmax=max(task_means), aspect="auto")
        for i, n in enumerate(ns):
            for j, k in enumerate(ks):
                if (n, k) in mine:
                    cell = mine[n, k]
                    spread = "" if math.isnan(cell.std) else f"\n± {cell.std * k_scale:.3f}"
                    ax.text(j, i, f"{cell.mean * k_scale:.3f}{spread}", ha="center", va="center", fontsize=7,
                            color="k", bbox={"facecolor": "w", "alpha": 0.6, "linewidth": 0})  # fmt: skip
        ax.set_xticks(range(len(ks)), [f"k={k}" for k in ks], fontsize=8)
        ax.set_yticks(range(len(ns)), [f"N={n}" for n in ns], fontsize=8)
        references = [c for c in cells if c.task == task and not c.settings]
        note = "; ".join(f"{c.label} {c.mean * k_scale:.3f}" for c in references)
        ax.set_title(f"{task}: {variant} ({grid[0].metric})" + (f"\n{note}" if note else ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _label_colors(plt, cells: Sequence[Cell]) -> dict[str, str]:
    """One color per label, the same in every panel and plot (a task without some label's runs
    must not shift the others' colors)."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {label: cycle[i % len(cycle)] for i, label in enumerate(label_order(cells))}


def write_plots(cells: Sequence[Cell], out: Path) -> list[Path]:
    """Every plot whose data exists; a missing matplotlib or missing data is a logged note, not a failure."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("skipped the plots: matplotlib is not installed (pip install matplotlib)")
        return []
    made = [
        plot_bars(plt, cells, out.with_name(out.name + "_bars.png")),
        plot_params(plt, cells, out.with_name(out.name + "_params.png")),
        plot_load(plt, cells, out.with_name(out.name + "_load.png")),
        plot_expert_load(plt, cells, out.with_name(out.name + "_expert_load.png")),
        plot_curves(plt, cells, out.with_name(out.name + "_curves.png")),
        plot_grid(plt, cells, out.with_name(out.name + "_grid.png")),
    ]
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
        default="hypermoe:topk,hypermoe:topk_adapter",
        help="comma-separated LABEL:LABEL pairs for the head-to-head table ('' for none)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Write the tables and plots; return their paths."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    by = [key.strip() for key in args.by.split(",") if key.strip()]
    try:
        runs, excluded = exclude_tasks(
            collect(args.runs_dirs, args.tag) + references(args.reference), args.exclude_task
        )
        cells = group_runs(runs, by, args.metric)
        paper = load_paper_numbers(args.paper)
        pairs = parse_pairs(args.compare)
    except RunsError as error:
        raise SystemExit(f"make_table: {error}") from error
    if not deltas(cells):
        log.info("no %r cell shares a task and the other --by values with another label: no deltas", BASELINE)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tables = write_tables(cells, runs, args.metric, args.runs_dirs, args.out, paper, pairs, excluded)
    written = [*tables, *write_plots(cells, args.out)]
    log.info("wrote %s", ", ".join(map(str, written)))
    return written


if __name__ == "__main__":
    main()
