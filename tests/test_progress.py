"""Training progress where stdout is not a terminal (a log file, a SLURM job): plain lines every few steps
and after each validation, instead of the rich bar, which prints nothing there until training ends."""

import logging
import re
import sys
from types import SimpleNamespace

from helpers import compose_config
from lightning.pytorch.callbacks import RichProgressBar

import hypermoe.evaluate
from hypermoe.callbacks.progress import ProgressLines, RichBar, progress_bar
from hypermoe.evaluate import run_eval
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
    assert len(lines) == 5, lines  # every step (a tenth of 4 steps is less than the 2 asked), then the validation
    number = r"\d+(\.\d+)?(e[-+]\d+)?"
    for step, line in zip((1, 2, 3, 4), lines[:4], strict=True):
        assert re.fullmatch(
            rf"step {step}/4  epoch 1/1  train/loss {number}  {number} steps/s  elapsed 0:00:\d\d", line
        )
    accuracy = metrics["final"]["val/accuracy"]
    assert re.fullmatch(
        rf"validation at step 4 \(epoch 1\): val/accuracy {accuracy:.4g}  .*elapsed 0:00:\d\d", lines[4]
    )


def test_the_rich_bar_on_a_terminal_and_the_lines_elsewhere(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert isinstance(progress_bar(every_n_steps=10), RichBar)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    lines = progress_bar(every_n_steps=10)
    assert isinstance(lines, ProgressLines) and lines.every_n_steps == 10


def test_a_short_run_logs_a_line_every_tenth_of_its_steps(monkeypatch, caplog):
    """With the default 50, a 48-step run (make train's) would log no step line at all."""
    logged = []
    for total, every in ((48, 50), (1080, 50), (5, 50), (48, 2), (float("inf"), 50)):
        lines = ProgressLines(every_n_steps=every)
        trainer = SimpleNamespace(global_step=0, estimated_stepping_batches=total)
        lines.on_train_start(trainer, None)
        logged.append(lines._interval)
    assert logged == [4, 50, 1, 2, 50]


def test_eval_gets_the_lines_in_a_log_file_which_log_no_validation_line_of_training(tmp_path, caplog, monkeypatch):
    """In a log file eval.py drew Lightning's default bar, every frame kept there; its validation is
    not training's either: it logs its own result, and the lines log nothing."""
    run(compose_config("train", SHORT, tmp_path / "train"))
    cfg = compose_config("eval", [f"ckpt_path={tmp_path / 'train' / 'checkpoints' / 'last.ckpt'}"], tmp_path / "eval")
    made = []
    instantiate_setting = hypermoe.evaluate.instantiate_setting
    monkeypatch.setattr(
        hypermoe.evaluate,
        "instantiate_setting",
        lambda *args, **kwargs: made.append(instantiate_setting(*args, **kwargs)) or made[-1],
    )
    with caplog.at_level(logging.INFO, logger="hypermoe.callbacks.progress"):
        metrics = run_eval(cfg)
    assert metrics["validation"]["val/accuracy"] >= 0
    (trainer,) = made
    assert isinstance(trainer.progress_bar_callback, ProgressLines)
    assert not [r for r in caplog.records if r.name == "hypermoe.callbacks.progress"]


def test_the_rich_bar_shows_no_logger_version(monkeypatch):
    trainer = SimpleNamespace(loggers=[SimpleNamespace(version=0)], progress_bar_metrics={"train/loss": 0.5})
    monkeypatch.setattr(RichProgressBar, "get_metrics", lambda self, trainer, module: {"train/loss": 0.5, "v_num": 0})
    assert RichBar().get_metrics(trainer, None) == {"train/loss": 0.5}


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
