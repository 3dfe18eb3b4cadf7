"""Config helpers shared by the entry points: resolvers, the model schema and the run's self-description."""

import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf, open_dict

from hypermoe.schema import as_config_error, register_model_schemas

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"


def names_machine_paths(override: str) -> bool:
    """Whether a command-line override sets ``paths.*`` (also as ``+paths.`` / ``~paths.``): the
    folders of the machine it ran on, left out of every record meant for another machine."""
    return override.lstrip("+~").startswith("paths.")


def moe_shape(num_experts: int | None, top_k: int | None) -> str:
    """``-N8k2`` for a routed variant's experts and top-k (``-N8`` for a dense MoE), "" for ffn:
    what tells the runs of an experts x top-k grid apart in a run name."""
    if num_experts is None:
        return ""
    return f"-N{num_experts}" + (f"k{top_k}" if top_k is not None else "")


if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    OmegaConf.register_new_resolver("moe_shape", moe_shape)
register_model_schemas()


def config_options(group: str) -> list[str]:
    """The options of the config group ``conf/<group>/`` (its YAML files' names), sorted."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


# Where the benchmark scripts write their reports: a report rewritten by the run before is not a
# change to the code, so it does not make the next run's revision +dirty (``make bench`` runs two).
RESULTS_DIR = "experiments/results"


def git_revision(root: Path = PROJECT_ROOT) -> str:
    """The commit the code ran from (``+dirty`` when the tree had changes outside RESULTS_DIR),
    or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", f":(exclude){RESULTS_DIR}"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        return sha + ("+dirty" if changes.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def script_command(script: str, argv: Sequence[str] | None) -> str:
    """The command line that runs ``script`` (its path from the project root) with ``argv``, or
    with this process's own arguments when argv is None: how a report says it was made."""
    return shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)])


def config_choice(group: str) -> str | None:
    """The option the running Hydra app chose for a config group (``ablation=agg_mean`` ->
    ``agg_mean``); None for no option, or outside a Hydra app (``compose_config``)."""
    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group)


def to_container(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def compose_config(name: str, overrides: list[str], output_dir: Path | str) -> DictConfig:
    """``conf/<name>.yaml`` with overrides, as train.py / eval.py would see it, outside a Hydra
    app (tests, scripts): paths.output_dir points at ``output_dir`` because
    ``${hydra:runtime.output_dir}`` exists only inside one. A ``model.*`` value of the wrong type,
    which the schema refuses, is a ConfigError naming the key and the type it takes."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=name, overrides=overrides)
    except ConfigCompositionException as error:
        refusal = as_config_error(error)
        if refusal is None:
            raise
        raise refusal from None
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg
