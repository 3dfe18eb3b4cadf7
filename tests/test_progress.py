"""Training progress where stdout is not a terminal (a log file, a SLURM job): plain lines every few steps
and after each validation, instead of the rich bar, which prints nothing there until training ends."""

import logging
import re
import sys
from types import SimpleNamespace

from helpers import compose_config
from lightning.pytorch.callbacks import RichProgressBar

from hypermoe.callbacks.progress import ProgressLines, progress_bar
from hypermoe.train import run

# 4 steps of the tiny backbone on the generated task, validated once; pytest's captured stdout is no terminal
SHORT = ["backbone=bert_tiny", "experiment=synthetic_tiny", "model=topk", "logger=none", "trainer.max_epochs=1",
         "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=2",
         "callbacks.progress_bar.every_n_steps=2"]  # fmt: skip


def test_a_run_whose_output_is_no_terminal_logs_progress_lines(tmp_path, caplog):
    assert not sys.stdout.isatty()
    with caplog.at_level(logging.INFO, logger="hypermoe.callbacks.progress"):
        metrics = run(compose_config("train", SHORT, tmp_path))
    lines = [r.getMessage() for r in caplog.records if r.name == "hypermoe.callbacks.progress"]
    assert len(lines) == 3, lines  # steps 2 and 4, then the validation at the end of the epoch
    number = r"\d+(\.\d+)?(e[-+]\d+)?"
    for step, line in zip((2, 4), lines[:2], strict=True):
        assert re.fullmatch(
            rf"step {step}/4  epoch 1/1  train/loss {number}  {number} steps/s  elapsed 0:00:\d\d", line
        )
    accuracy = metrics["final"]["val/accuracy"]
    assert re.fullmatch(
        rf"validation at step 4 \(epoch 1\): val/accuracy {accuracy:.4g}  .*elapsed 0:00:\d\d", lines[2]
    )


def test_the_rich_bar_on_a_terminal_and_the_lines_elsewhere(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert isinstance(progress_bar(every_n_steps=10), RichProgressBar)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    lines = progress_bar(every_n_steps=10)
    assert isinstance(lines, ProgressLines) and lines.every_n_steps == 10


def test_the_rate_counts_the_steps_since_the_last_line_of_a_resumed_run(monkeypatch, caplog):
    clock = iter([100.0, 101.0])
    monkeypatch.setattr("hypermoe.callbacks.progress.time", SimpleNamespace(perf_counter=lambda: next(clock)))
    lines = ProgressLines(every_n_steps=2)
    monkeypatch.setattr(lines, "get_metrics", lambda trainer, module: {})
    trainer = SimpleNamespace(global_step=10, estimated_stepping_batches=20, max_epochs=1, current_epoch=0)
    lines.on_train_start(trainer, None)  # resumed at step 10
    trainer.global_step = 12
    with caplog.at_level(logging.INFO, logger="hypermoe.callbacks.progress"):
        lines.on_train_batch_end(trainer, None)  # 2 steps in 1 s
    assert re.search(r"  2\.00 steps/s", caplog.text), caplog.text
