"""Write the W&B grid sweep specs (sweeps/<name>.yaml) from the paper tables' grids, so a grid is
defined once, in its table (conf/table/<table>.yaml):

    python experiments/make_sweep.py             # rewrite every spec in SPECS
    python experiments/make_sweep.py --check     # exit 1 if a spec is not what its table gives

A spec sweeps the table's grid (``hydra.sweeper.params``, read by ``run_grid.grid_of``) and passes,
as fixed values, what the table sets otherwise and a ``train.py`` run needs: the backbone and data
options, the grid's single values, the tags (so make_table reads agent runs and table runs alike),
the table's ``keep_checkpoints``, ``logger=wandb``; overrides in SPECS replace those. The metric is
the task's selection metric, best over the validations, in its direction.
"""

import argparse
import sys
import textwrap
from typing import Any

import _this_checkout  # noqa: F401  (first: this checkout's hypermoe, not an installed one)
import yaml
from hydra import compose, initialize_config_dir
from run_grid import grid_of

from hypermoe.config import CONF_DIR, PROJECT_ROOT
from hypermoe.data.lm import get_corpus
from hypermoe.data.metrics import metric_mode
from hypermoe.data.tasks import get_task

SWEEPS = PROJECT_ROOT / "sweeps"
# ${args_no_hyphens} passes each parameter as key=value, which is Hydra's override syntax
COMMAND = ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
# spec name -> (what it runs, the table whose grid it sweeps, overrides of the table's other settings)
SPECS = {
    "experts_topk": (
        "Number of experts x top-k, sparse top-k MoE vs HyperMoE, 3 seeds, on MiniLM / SuperGLUE RTE "
        "(a setting a CPU runs)",
        "experts_topk_cpu",
        ["backbone=minilm", "data=superglue", "data.task=rte", "tags=[experts_topk]"],
    ),
    "experts_topk_char_cpu": (
        "Number of experts x top-k, sparse top-k MoE vs HyperMoE, 3 seeds, on character-level Tiny Shakespeare "
        "with nanoGPT's CPU baby GPT",
        "experts_topk_char_cpu",
        [],
    ),
}


def sweep_spec(name: str) -> str:
    """The text of sweeps/<name>.yaml."""
    about, table, overrides = SPECS[name]
    fixed = dict(override.split("=", 1) for override in overrides)
    grid = {key: values for key, values in grid_of(table).items() if key not in fixed}
    first_run = [f"table={table}", *(f"{key}={values[0]}" for key, values in grid.items()), *overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=first_run, return_hydra_config=True)
    task = get_corpus(cfg.data.task) if "benchmark" not in cfg.data else get_task(cfg.data.benchmark, cfg.data.task)
    single = {key: values[0] for key, values in grid.items() if len(values) == 1}
    single |= {key: value for key, value in fixed.items() if key not in ("backbone", "data", "tags")}
    parameters: dict[str, Any] = {
        **{key: {"values": [yaml.safe_load(v) for v in values]} for key, values in grid.items() if len(values) > 1},
        **{group: {"value": cfg.hydra.runtime.choices[group]} for group in ("backbone", "data")},
        **{key: {"value": yaml.safe_load(value)} for key, value in single.items()},
        "logger": {"value": "wandb"},
        "tags": {"value": list(cfg.tags)},
        # as in the table's grid: a run's metrics.json and W&B hold its results, its checkpoints
        # (~0.5-3 GB each) would fill the disk over a sweep
        "keep_checkpoints": {"value": cfg.keep_checkpoints},
    }
    spec = {
        "name": name,
        "program": "train.py",
        "command": COMMAND,
        "method": "grid",
        "metric": {"name": f"val/{task.main_metric}_best", "goal": metric_mode(task.main_metric) + "imize"},
        "parameters": parameters,
    }
    sizes = " x ".join(str(len(values)) for values in grid.values() if len(values) > 1)
    header = (
        f"{about}: the {sizes} grid of conf/table/{table}.yaml, run by W&B agents. Written by "
        "experiments/make_sweep.py (make sweeps) from that table: edit the table, not this file. "
        "How to run it: sweeps/README.md."
    )
    comment = "".join(f"# {line}\n" for line in textwrap.wrap(header, width=98))
    return comment + yaml.safe_dump(spec, sort_keys=False, default_flow_style=None, width=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a spec differs from its table")
    args = parser.parse_args()
    stale = []
    for name in SPECS:
        path, text = SWEEPS / f"{name}.yaml", sweep_spec(name)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path.relative_to(PROJECT_ROOT)))
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(PROJECT_ROOT)}")
    if stale:
        sys.exit(f"not what their tables give (run python experiments/make_sweep.py): {', '.join(stale)}")


if __name__ == "__main__":
    main()
