"""Every run and every multirun writes into a folder of its own.

Hydra names a run's folder after the second it started in, and writes into a folder that already
exists: two runs started in the same second, or a ``hydra.run.dir`` that names an earlier run,
would share one folder, and the later run's ``metrics.json``, checkpoints and ``.hydra/`` would
replace the earlier's. ``OwnRunFolder`` claims the folder before Hydra writes anything into it.
"""

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write


class OwnRunFolder(Callback):
    """A run whose folder Hydra named (``hydra.run.dir`` not given) takes the next free name,
    ``<name>_2``, ``<name>_3``, ..., when another run holds that one. A run given a folder that
    holds a run (``.hydra/``), and a multirun given a sweep folder that holds another multirun's
    jobs, stop with exit code 2 before anything is written. A folder is claimed by creating it,
    so two processes never both get one."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.output_subdir is None:
            return  # a process of a run that already holds the folder (Lightning's DDP ranks write no .hydra/)
        folder = Path(str(config.hydra.run.dir))
        if _given(config, "hydra.run.dir"):
            if (folder / config.hydra.output_subdir).exists():
                _refuse(
                    f"hydra.run.dir={folder} already holds a run ({config.hydra.output_subdir}/): every run, "
                    "a resumed one too, needs a folder of its own"
                )
            _create(folder, "hydra.run.dir")
            return
        _create(folder.parent, "hydra.run.dir")
        claimed = _claim(folder)
        if claimed != folder:
            with read_write(config), open_dict(config):
                config.hydra.run.dir = str(claimed)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir))
        given = _given(config, "hydra.sweep.dir")
        if given and folder.is_dir():
            jobs = [path.parent for path in folder.glob(f"*/{config.hydra.output_subdir or '.hydra'}")]
            if jobs:
                _refuse(
                    f"hydra.sweep.dir={folder} already holds a multirun's jobs ({jobs[0]}, ...): give this one a "
                    "folder of its own"
                )
            return
        _create(folder.parent, "hydra.sweep.dir")
        try:
            folder.mkdir()
        except FileExistsError:
            _refuse(
                f"another multirun started in the same second writes into {folder}: start this one again, "
                "or give it a hydra.sweep.dir"
            )


def _given(config: DictConfig, key: str) -> bool:
    """Whether the command line set ``key`` (rather than the config's default)."""
    return any(override.split("=", 1)[0].lstrip("+") == key for override in config.hydra.overrides.hydra)


def _create(folder: Path, key: str) -> None:
    """``folder`` and its parents created, or the run refused: a file in its way, no permission."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = "a file is in its way" if isinstance(error, FileExistsError | NotADirectoryError) else error.strerror
        _refuse(f"{key}: cannot create the folder {folder}: {reason} ({error.filename})")


def _claim(folder: Path) -> Path:
    """``folder``, or the first ``<folder>_<i>`` (i = 2, 3, ...) that did not exist, now created."""
    candidate, i = folder, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            i += 1
            candidate = folder.with_name(f"{folder.name}_{i}")


def _refuse(message: str) -> None:
    """Before Hydra configures logging: the project's one-line message and exit code for a bad configuration."""
    print(f"invalid configuration: {message}", file=sys.stderr)
    sys.exit(2)
