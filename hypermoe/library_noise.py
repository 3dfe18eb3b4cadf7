"""Messages the libraries print at every run that a user of this project can do nothing about,
kept off the console so that what a run says about itself stands out."""

import logging
import sys
import warnings

import transformers

# Lightning logs its rank-zero messages under one of these names, whichever of the two packages was imported last
_LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _NoAdvertisement(logging.Filter):
    """Lightning's suggestion, at every Trainer, to install its cloud logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


_NO_ADVERTISEMENT = _NoAdvertisement()


def silence_library_noise() -> None:
    """Idempotent: a multirun's jobs each call it."""
    for name in _LIGHTNING_LOGGERS:
        logging.getLogger(name).addFilter(_NO_ADVERTISEMENT)  # a filter already there is not added again
    if not sys.stderr.isatty():  # a log file keeps every frame of transformers' "Loading weights" bar
        transformers.utils.logging.disable_progress_bar()
    # Lightning's own pytree code still builds the class torch 2.13 deprecates, at every batch transfer
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
