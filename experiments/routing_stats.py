"""Per-layer routing statistics of a table's runs, by label: how balanced and how stable routing ends.

    python experiments/routing_stats.py experiments/results/runs/hyper_ablation_char_cpu --by ablation \\
        --labels topk,topk_gating_noisy,agg_sum,gating_noisy --out experiments/results/routing_gating_char_cpu

Runs are collected and labelled as make_table.py does (``--by``, ``--tag``). Per task, label and MoE
layer, over the runs (mean ± sample std, with n where fewer runs have a statistic), from each run's
metrics.json:
- ``load_entropy``: entropy of the experts' shares of the routed tokens at the last validation
  (``expert_load``), over log N: 1 is a uniform load, 0 one expert taking every token;
- ``busiest_share_x_n``: the busiest expert's share times N: 1 is balanced, N one expert taking all;
- ``expert_change_last``: the share of validation tokens whose first-choice expert differs from the
  previous validation's (``history``'s ``moe/<layer>/expert_change``), at the last validation;
- ``expert_change_mean``: the same averaged over every validation that has a previous one;
- ``router_entropy``: the router distribution's mean entropy per token (nats) at the last logged
  training step, read from the run's CSV log where it sits beside metrics.json, over the runs that
  have one (the records under ``experiments/results/runs`` carry none: ``-``).

Writes ``<out>.md`` and ``<out>.csv``.
"""

import argparse
import logging
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # make_table is a script beside this one (see bench_train.py)
    sys.path.insert(0, str(HERE))

import make_table  # noqa: E402

log = logging.getLogger("routing_stats")

STATS = ("load_entropy", "busiest_share_x_n", "expert_change_last", "expert_change_mean", "router_entropy")
_CHANGE = re.compile(r"moe/(.+)/expert_change$")
_ENTROPY = re.compile(r"moe/(.+)/router_entropy$")


def load_balance(shares: Sequence[float]) -> dict[str, float]:
    """One layer's expert shares (normalised to sum to 1) -> normalised load entropy and the
    busiest share times N; NaN where they mean nothing (one expert, or no token routed)."""
    total = sum(shares)
    if len(shares) < 2 or total <= 0:
        return {"load_entropy": math.nan, "busiest_share_x_n": math.nan}
    shares = [share / total for share in shares]
    entropy = -sum(share * math.log(share) for share in shares if share > 0)
    return {"load_entropy": entropy / math.log(len(shares)), "busiest_share_x_n": max(shares) * len(shares)}


def expert_changes(history: Sequence[dict]) -> dict[str, dict[str, float]]:
    """layer -> expert_change at the last validation that logged it, and its mean over all that did."""
    logged: dict[str, list[float]] = {}
    for entry in history:
        for key, value in entry.items():
            if match := _CHANGE.match(key):
                logged.setdefault(match.group(1), []).append(float(value))
    return {
        layer: {"expert_change_last": values[-1], "expert_change_mean": sum(values) / len(values)}
        for layer, values in logged.items()
    }


def router_entropies(run_dir: Path) -> dict[str, float]:
    """layer -> router entropy at the last step that logged it, from the run's newest CSV log ({} if none)."""
    logs = sorted(run_dir.glob("csv/version_*/metrics.csv"), key=lambda p: make_table.natural_key(p.parent.name))
    if not logs:
        return {}
    logged = pd.read_csv(logs[-1])
    columns = {column: match.group(1) for column in logged.columns if (match := _ENTROPY.match(column))}
    last = logged[list(columns)].apply(pd.to_numeric).ffill().iloc[-1] if len(logged) else pd.Series()
    return {columns[column]: float(value) for column, value in last.dropna().items()}


def run_layers(expert_load: dict | None, history: list | None, run_dir: Path) -> pd.DataFrame:
    """One row per MoE layer of one run, with every statistic it has."""
    rows: dict[str, dict[str, float]] = {}
    for layer, shares in (expert_load or {}).items():
        rows.setdefault(layer, {}).update(load_balance(shares))
    for layer, changes in expert_changes(history or []).items():
        rows.setdefault(layer, {}).update(changes)
    for layer, entropy in router_entropies(run_dir).items():
        rows.setdefault(layer, {})["router_entropy"] = entropy
    frame = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(STATS))
    return frame.rename_axis("layer").reset_index()


def layer_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (task, label, layer): the runs, and the mean, std and n (the runs that have it) of
    every statistic, sorted by task, label (in the runs' order) and layer (layer2 before layer10)."""
    columns = ["task", "label", "expert_load", "history", "run_dir"]
    parts = [
        run_layers(expert_load, history, run_dir).assign(task=task, label=label)
        for task, label, expert_load, history, run_dir in runs[columns].itertuples(index=False)
    ]
    every = pd.concat(parts, ignore_index=True)
    if every.empty:
        raise make_table.RunsError("no run records expert_load or expert_change: nothing to tabulate")
    every["label"] = pd.Categorical(every["label"], categories=runs["label"].cat.categories, ordered=True)
    every["layer_order"] = every["layer"].map(lambda layer: tuple(make_table.natural_key(layer)))
    grouped = every.groupby(["task", "label", "layer_order", "layer"], observed=True, sort=True)
    table = grouped[list(STATS)].agg(["mean", "std", "count"])
    table.columns = [f"{stat}_{'n' if what == 'count' else what}" for stat, what in table.columns]
    table.insert(0, "runs", grouped.size())
    return table.reset_index().drop(columns="layer_order")


def cell(row: pd.Series, stat: str) -> str:
    """mean ± std, with its n where fewer runs than the row's have the statistic."""
    mean, std, n = row[f"{stat}_mean"], row[f"{stat}_std"], row[f"{stat}_n"]
    if pd.isna(mean):
        return make_table.MISSING
    text = f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f}"
    return text if n == row["runs"] else f"{text} (n={n})"


def markdown(table: pd.DataFrame, sources: Sequence[Path]) -> str:
    lines = [
        "# Routing statistics per MoE layer",
        "",
        f"Runs under {', '.join(f'`{make_table.shown_path(Path(s))}`' for s in sources)}; mean ± sample std "
        "over each label's runs (see experiments/routing_stats.py for each statistic).",
        "",
        "| task | label | layer | runs | " + " | ".join(f"`{stat}`" for stat in STATS) + " |",
        "|---|---|---|---:|" + "---:|" * len(STATS),
    ]
    for _, row in table.iterrows():
        cells = [row["task"], str(row["label"]), row["layer"], str(row["runs"]), *(cell(row, stat) for stat in STATS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs_dirs", nargs="+", type=Path, metavar="RUNS_DIR", help="searched for **/metrics.json")
    parser.add_argument("--out", type=Path, required=True, help="output prefix: writes <out>.md and <out>.csv")
    parser.add_argument("--by", default="model", help="comma-separated dotted keys into the run record for the label")
    parser.add_argument("--labels", default="", help="comma-separated labels to keep (default: every label)")
    parser.add_argument("--tag", action="append", default=[], help="keep runs with this tag (repeat: all of them)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    by = [key.strip() for key in args.by.split(",") if key.strip()]
    keep = [label.strip() for label in args.labels.split(",") if label.strip()]
    try:
        records = make_table.collect(args.runs_dirs, args.tag)
        runs = make_table.group_runs(records, by, "best")
        unknown = sorted(set(keep) - set(runs["label"].astype(str)))
        if unknown:
            raise make_table.RunsError(f"--labels {', '.join(unknown)}: no run has that label")
        if keep:
            runs = runs[runs["label"].isin(keep)].copy()
            runs["label"] = runs["label"].cat.set_categories(keep, ordered=True)
        table = layer_table(runs)
    except make_table.RunsError as error:
        raise SystemExit(f"routing_stats: {error}") from error
    args.out.parent.mkdir(parents=True, exist_ok=True)
    md, csv = args.out.with_name(args.out.name + ".md"), args.out.with_name(args.out.name + ".csv")
    md.write_text(markdown(table, args.runs_dirs))
    table.to_csv(csv, index=False, float_format="%.6g")
    log.info("wrote %s, %s", md, csv)
    return [md, csv]


if __name__ == "__main__":
    main()
