"""A run's console carries what the run says, not the libraries' advertisements and deprecations."""

import logging
import warnings

import pytest
import transformers
from helpers import train_cli

from hypermoe.library_noise import silence_library_noise


@pytest.fixture(autouse=True)
def _transformers_bars_restored():
    yield
    transformers.utils.logging.enable_progress_bar()  # the later tests' default


def test_a_run_prints_no_lightning_advertisement_or_pytree_deprecation(tmp_path):
    result = train_cli(tmp_path, "experiment=synthetic_tiny", "model=topk", "debug=fast_dev_run")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "parameters: {'total'" in output and "GPU available" in output  # the run's own lines, Lightning's others
    assert "litlogger" not in output
    assert "LeafSpec" not in output


def test_only_the_advertisement_and_the_pytree_deprecation_are_silenced(caplog):
    silence_library_noise()
    silence_library_noise()  # a multirun's next job: the filter is not stacked
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
        logger.info("GPU available: False, used: False")
    assert [record.getMessage() for record in caplog.records] == ["GPU available: False, used: False"]
    with warnings.catch_warnings(record=True) as caught:
        silence_library_noise()  # inside catch_warnings, which restores the filters after
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("another deprecation", FutureWarning, stacklevel=1)
    assert [str(warning.message) for warning in caught] == ["another deprecation"]


def test_transformers_bars_are_off_where_stderr_is_no_terminal():
    transformers.utils.logging.enable_progress_bar()  # as a process starts
    silence_library_noise()  # pytest captures stderr: no terminal
    assert not transformers.utils.logging.is_progress_bar_enabled()
