"""What always predicting the training set's most frequent label scores on each task's validation
split, with the task's own metrics: the floor a table's cells must clear to show any learning.

    python experiments/majority_baseline.py superglue/cb superglue/rte glue/cola \\
        --out experiments/results/majority_baseline.json

Tasks are ``<benchmark>/<task>``, read from the data root as training reads them (``--data-dir``,
default HYPERMOE_DATA). A regression task (STS-B) has no such floor: a constant prediction has no
correlation, so it is listed without scores. The scores are the metrics as training computes them,
edge cases included: a constant prediction's Matthews correlation, undefined, is 0, as the official
scorers give it (``hypermoe.data.metrics.matthews_from_confusion``).
"""

import argparse
import json
import os
from collections import Counter
from pathlib import Path

import _this_checkout  # noqa: F401  (first: this checkout's hypermoe, not an installed one)
import torch

from hypermoe.data.metrics import build_metrics
from hypermoe.data.sources import load_split
from hypermoe.data.tasks import Task, get_task


def majority_scores(task: Task, data_dir: Path) -> dict[str, float | int | str]:
    """The majority label of the training split and each metric of predicting it everywhere."""
    if task.kind == "regression":
        return {}
    majority, _ = Counter(example.label for example in load_split(task, "train", data_dir)).most_common(1)[0]
    validation = load_split(task, "validation", data_dir)
    target = torch.tensor([example.label for example in validation])
    group_ids: dict[str | None, int] = {}
    groups = torch.tensor([group_ids.setdefault(example.group, len(group_ids)) for example in validation])
    metrics = build_metrics(task, prefix="")
    scores = metrics(torch.full_like(target, int(majority)), target, groups=groups)
    label = task.labels[int(majority)] if task.labels else majority
    return {"majority_label": str(label), **{name: float(scores[name]) for name in task.metrics}}  # main metric first


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="+", help="<benchmark>/<task>, e.g. superglue/cb glue/cola")
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("HYPERMOE_DATA"), help="default: HYPERMOE_DATA")
    parser.add_argument("--out", type=Path, help="JSON: task -> majority label and metrics")
    args = parser.parse_args(argv)
    if args.data_dir is None:
        parser.error("no data root: pass --data-dir or set HYPERMOE_DATA")
    return args


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    results = {}
    for name in args.tasks:
        benchmark, _, task = name.partition("/")
        try:
            results[name] = majority_scores(get_task(benchmark, task), args.data_dir)
        except (ValueError, FileNotFoundError) as error:  # an unknown task; a missing or malformed file (DataError)
            raise SystemExit(f"majority_baseline: {name}: {error}") from None
        print(name, json.dumps(results[name]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
