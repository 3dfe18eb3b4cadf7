"""What a run checks of the checkpoint it resumes from, and of the folders it will write checkpoints
to, before any compute (``ConfigError``: one message and an exit code, as ``hypermoe.validation``'s).

A checkpoint is read without unpickling code and its records' CRC-32 are verified; a resumed run
must ask for the network and task it holds and keep what decides its data order and steps
(``RESUME_KEYS``); a new run never writes into a folder that holds another run's checkpoints.
"""

import logging
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from hypermoe.config import to_container
from hypermoe.errors import ConfigError
from hypermoe.validation import SCHEDULER_KEYS, first_line

log = logging.getLogger(__name__)

# Keys that do not shape the network: a run may resume with other values.
_NOT_STRUCTURAL = {"backbone.recipe", "backbone.tokenizer_fallback"}
# what changes the order of the training data, the number of steps or the learning-rate schedule
# (rebuilt over the run's steps on a resume, from the step it stopped at): a resumed run keeps them
RESUME_KEYS = (
    "seed",
    "data.seed",  # the training subsample and the order of every epoch (synthetic data: the data itself)
    "callbacks.batch_reseed.seed",  # every batch's dropout and router noise
    "data.batch_size",
    "data.max_train_examples",
    "data.max_train_blocks",
    "trainer.accumulate_grad_batches",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.limit_train_batches",
    "optimizer.lr",
    *(f"scheduler.{key}" for key in SCHEDULER_KEYS),
)


def check_resume_settings(checkpoint: dict[str, Any], cfg: DictConfig) -> None:
    """A resumed run must keep what decides its data order and its steps (``RESUME_KEYS``), or it
    would not continue the run it resumes; ``resume_strict=false`` lets it go on, said in the log."""
    stored, requested = checkpoint["hypermoe"]["config"], to_container(cfg)
    _refuse_unless_lenient(
        [
            f"{key}={_at(requested, key)!r} (checkpoint: {_at(stored, key)!r})"
            for key in RESUME_KEYS
            if _at(stored, key) != _at(requested, key)
        ],
        cfg,
    )


def check_resume_world_size(resumed: dict[str, Any], world_size: int, cfg: DictConfig) -> None:
    """The number of training processes splits each epoch's data among them and multiplies the
    batch of a step: like ``RESUME_KEYS``, a resumed run keeps it. Told by the trainer, since
    ``trainer.devices='auto'`` counts the machine's devices (a checkpoint from before the number
    was stored is not checked)."""
    stored = resumed.get("world_size", world_size)
    if stored != world_size:
        _refuse_unless_lenient(
            [f"{world_size} training processes, trainer.devices x trainer.num_nodes (checkpoint: {stored})"], cfg
        )


def _refuse_unless_lenient(differences: list[str], cfg: DictConfig) -> None:
    if not differences:
        return
    if cfg.get("resume_strict", True):
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path!r} was trained with other settings that decide the data order, the "
            "steps or the learning-rate schedule: " + "; ".join(differences) + ". Resume with the checkpoint's "
            "values, or pass resume_strict=false to go on with the new ones."
        )
    log.warning(
        "resume_strict=false: resuming with changed data order, steps or learning-rate schedule: %s",
        "; ".join(differences),
    )


def load_checkpoint(ckpt_path: str) -> dict[str, Any]:
    """A checkpoint written by train.py, loaded without unpickling code (``weights_only``)."""
    path = Path(ckpt_path)
    if path.is_dir():
        raise ConfigError(f"ckpt_path={ckpt_path!r} is a folder: name a checkpoint file in it (e.g. last.ckpt)")
    if not path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r}: no such file")
    if not zipfile.is_zipfile(path):  # torch's own error would suggest unpickling code (weights_only=False)
        raise ConfigError(
            f"ckpt_path={ckpt_path!r} cannot be read as a checkpoint: it is not a whole zip archive, which "
            "torch.save writes (it is empty, cut short, or another kind of file)"
        )
    damaged = _damaged_record(path)
    if damaged:
        raise ConfigError(f"ckpt_path={ckpt_path!r} is damaged: {damaged}. Resume from another checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, or holding code: all unreadable here
        raise ConfigError(f"ckpt_path={ckpt_path!r} cannot be read as a checkpoint: {first_line(error)}") from None
    if not isinstance(checkpoint, dict) or "hypermoe" not in checkpoint:
        raise ConfigError(f"ckpt_path={ckpt_path!r} was not written by hypermoe's train.py: it holds no run config")
    return checkpoint


def _damaged_record(path: Path) -> str | None:
    """What is wrong with a checkpoint's bytes, or None. torch.save writes a zip archive that
    keeps a CRC-32 of every record, which torch.load does not verify: a flipped byte in a weight
    still unpickles."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every record, checking its CRC-32
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"its archive cannot be read ({error})"
    return None if bad is None else f"record {bad!r} fails its CRC-32 check"


def ensure_checkpoint_folders(cfg: DictConfig) -> None:
    """Every checkpoint folder the run will write, made and tried before training, not at the
    first save hundreds of steps in: a resumed run writes beside the checkpoint it resumes, a new
    run into folders that hold no checkpoint (Lightning would replace another run's last.ckpt)."""
    callbacks = (cfg.get("callbacks") or {}).items()
    folders = {f"callbacks.{name}.dirpath": c.dirpath for name, c in callbacks if c is not None and c.get("dirpath")}
    if cfg.get("ckpt_path"):
        folders = dict.fromkeys(folders, str(Path(cfg.ckpt_path).resolve().parent))
    for key, folder in folders.items():
        held = sorted(path.name for path in Path(folder).glob("*.ckpt"))
        if held and not cfg.get("ckpt_path"):  # a SLURM job requeued into its folder too: it resumes by ckpt_path
            resume = f", or resume from them with ckpt_path={Path(folder) / 'last.ckpt'}" if "last.ckpt" in held else ""
            raise ConfigError(
                f"{key}={folder!r} already holds checkpoints ({', '.join(held)}): a new run would overwrite "
                f"them. Give it a folder of its own{resume}"
            )
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise ConfigError(f"{key}={folder!r}: checkpoints cannot be written there ({error.strerror})") from None


def check_checkpoint_matches(checkpoint: dict[str, Any], cfg: DictConfig) -> None:
    """A resumed run must ask for the network (model, backbone) and task the checkpoint was trained with."""
    stored = checkpoint["hypermoe"]["config"]
    requested = to_container(cfg)
    differences = []
    for section in ("model", "backbone", "data.benchmark", "data.task"):
        before, now = _flat(_at(stored, section), section), _flat(_at(requested, section), section)
        for key in sorted(before.keys() | now.keys()):
            was, asked = before.get(key, "<absent>"), now.get(key, "<absent>")
            if was != asked and not any(key == skip or key.startswith(f"{skip}.") for skip in _NOT_STRUCTURAL):
                differences.append(f"{key}={asked!r} (checkpoint: {was!r})")
    if differences:
        variant = _at(stored, "model.variant")
        if variant != _at(requested, "model.variant"):  # the cause of every other model difference: named first
            differences.sort(key=lambda difference: not difference.startswith("model.variant="))
            differences[0] += f": add model={variant}"
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path!r} was trained with another model or task than this run asks for: "
            + "; ".join(differences)
            + ". Resume with the checkpoint's settings, or start a new run without ckpt_path."
        )


def _at(config: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    return {key: leaf for name, item in value.items() for key, leaf in _flat(item, f"{prefix}.{name}").items()}
