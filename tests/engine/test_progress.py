"""What training prints: one line per epoch (no bar off a terminal), the summary from Python too, no
Lightning chatter; early-stopped runs are not told to train longer; too many CPU processes are refused."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import cvtransfer
from cvtransfer import cli
from cvtransfer.config import Config
from cvtransfer.engine.progress import FOLDER_LOGGER, EpochLines, epoch_line, use_progress_bar
from cvtransfer.run import run_diagnosis
from tests.conftest import tiny_config

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)  train_loss \d+\.\d{4}  train_accuracy \d\.\d{4}  "
                        r"val_loss \d+\.\d{4}  val_accuracy \d\.\d{4}  \d+\.\ds$")
LIGHTNING_NOISE = ("GPU available", "TPU available", "`Trainer.fit` stopped", "HPU available", "LOCAL_RANK")


@pytest.mark.parametrize("progress", [False, True])
def test_one_line_per_epoch_and_no_bar_off_a_terminal(progress: bool, split_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", epochs=3, progress=progress))
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [EPOCH_LINE.match(line).groups() for line in lines] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert "\r" not in out and "it/s" not in out  # captured stdout is no terminal: never a bar
    assert not use_progress_bar(True)


def test_epoch_lines_are_printed_on_global_rank_zero_only(capsys: pytest.CaptureFixture) -> None:
    metrics = {"train_loss": torch.tensor(0.5), "val_accuracy": torch.tensor(0.75),
               "target_accuracy": torch.tensor(0.6), "train_penalty": torch.tensor(0.1)}
    lines = EpochLines()
    for rank_zero in (False, True):
        trainer = SimpleNamespace(is_global_zero=rank_zero, callback_metrics=metrics, current_epoch=1,
                                  max_epochs=5, progress_bar_callback=None)
        lines.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1
    expected = r"^epoch 2/5  train_loss 0\.5000  val_accuracy 0\.7500  target_accuracy 0\.6000  \d+\.\ds$"
    assert re.match(expected, printed[0])
    assert epoch_line(1, 2, {}, 1.25) == "epoch 1/2  1.2s"


def test_adaptation_prints_its_epochs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.losses.conftest import adapt_config, write_domain

    source, target = tmp_path / "source", tmp_path / "target"
    write_domain(source, 6, seed=0, background=(0, 70))
    write_domain(target / "train", 5, seed=1, background=(120, 230))
    write_domain(target / "test", 3, seed=2, background=(120, 230))
    cvtransfer.adapt(adapt_config(source, target, tmp_path / "run", epochs=2, iters_per_epoch=2))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2  train_loss ") and "target_accuracy" in lines[1]


def test_python_api_prints_the_cli_summary_without_lightning_noise(split_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capfd: pytest.CaptureFixture) -> None:
    # As in a fresh interpreter: logging not configured, Lightning at its own INFO level.
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    package = logging.getLogger("cvtransfer")
    monkeypatch.setattr(package, "handlers", [])
    monkeypatch.setattr(package, "level", logging.NOTSET)
    monkeypatch.setattr(logging.getLogger(FOLDER_LOGGER), "level", logging.NOTSET)
    for name in ("lightning.pytorch", "lightning.fabric"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.INFO)
    run = tmp_path / "run"
    cvtransfer.fit(tiny_config(split_dir, run, epochs=2))
    captured = capfd.readouterr()
    output = captured.out + captured.err
    assert [line for line in captured.out.splitlines() if EPOCH_LINE.match(line)][-1].startswith("epoch 2/2")
    assert re.search(r"^test accuracy \d\.\d{4}, macro F1 \d\.\d{4} \(12 images\)$", output, re.MULTILINE)
    assert re.search(r"^diagnosis: ", output, re.MULTILINE)
    assert f"run folder: {run}" in output.splitlines()
    assert not [noise for noise in LIGHTNING_NOISE if noise in output], output


@pytest.mark.parametrize(("options", "epochs_done", "advice"), [
    ({"epochs": 3}, 3, "try more epochs"),  # ran its course: more epochs may help
    ({"epochs": 10, "early_stop": 2}, 3, "early stopping ended the run (after 3 epochs)"),
    ({"epochs": 10}, 3, "try more epochs"),  # interrupted, not stopped early: more epochs may help
    ({"epochs": 10, "strategy": "linear", "head": "logistic"}, 1, "fine-tuning the backbone"),  # no epochs
])
def test_underfitting_advice_fits_how_the_run_ended(options: dict, epochs_done: int, advice: str) -> None:
    history = [{"epoch": i, "train_accuracy": 0.4, "val_accuracy": 0.4, "val_loss": 1.0 - 0.01 * i}
               for i in range(epochs_done)]
    result = run_diagnosis(Config(**options), history)
    assert result.verdict == "underfitting" and advice in result.message
    if advice != "try more epochs":
        assert "more epochs" not in result.message


def test_more_cpu_processes_than_cores_is_a_one_line_error(split_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(sys, "argv", [
        "cvtransfer", "fit", str(split_dir), "--backbone", "tinycnn", "--weights", "none",
        "--image-size", "16", "--epochs", "1", "--no-progress", "--accelerator", "cpu", "--devices", "4",
        "--distributed", "ddp", "--num-workers", "0", "--no-report", "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err == ("error: --devices 4 would start 4 CPU training processes but this machine has 2 CPU "
                   "cores: use --devices 2 or fewer (each process trains a full copy of the model, so more "
                   "processes than cores only slows training down)\n")
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_quiet_libraries_and_console_logging_are_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging
    import warnings

    from cvtransfer.engine import progress

    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    package = logging.getLogger("cvtransfer")
    monkeypatch.setattr(package, "handlers", [])
    with warnings.catch_warnings():
        progress.quiet_libraries()
        progress.console_logging()
        filters, added = list(warnings.filters), []
        monkeypatch.setattr(warnings, "filterwarnings", lambda *args, **kwargs: added.append(args))
        for _ in range(3):
            progress.quiet_libraries()
            progress.console_logging()
        # re-adding the filter would reset the record of warnings shown, which then show again
        assert added == [] and warnings.filters == filters
    assert len(package.handlers) == 1
