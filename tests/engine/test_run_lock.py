"""A run folder belongs to one command at a time."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

import cvtransfer
from cvtransfer.engine.run_lock import LOCK_FILE
from cvtransfer.errors import ConfigError
from tests.conftest import tiny_config


def hold_lock(run_dir: Path) -> IO[str]:
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = (run_dir / LOCK_FILE).open("a")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_a_folder_in_use_is_refused_and_left_alone(split_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with hold_lock(run_dir):
        with pytest.raises(ConfigError, match="in use by another cvtransfer command"):
            cvtransfer.fit(tiny_config(split_dir, run_dir, epochs=1))
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]  # no config.yaml was written
    run = cvtransfer.fit(tiny_config(split_dir, run_dir, epochs=1))  # free again: it runs
    with hold_lock(run_dir), pytest.raises(ConfigError, match="in use by another cvtransfer command"):
        cvtransfer.resume(run.path, epochs=2)
    assert len(run.history) == 1


def test_two_commands_started_together_on_one_folder(split_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "cvtransfer", "fit", str(split_dir), "--out", str(run_dir), "--backbone",
               "tinycnn", "--weights", "none", "--image-size", "16", "--epochs", "2", "--batch-size", "8",
               "--no-progress", "--no-report", "--accelerator", "cpu", "--num-workers", "0"]
    first, second = (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2))
    results = [(p.wait(timeout=300), p.stderr.read()) for p in (first, second)]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2).strip().splitlines()
    assert len(refused) == 1 and ("in use by another" in refused[0] or "already holds a run" in refused[0])
    assert len(cvtransfer.Run(run_dir).history) == 2  # the run that ran is whole


def test_resume_removes_what_killed_writes_left(split_dir: Path, tmp_path: Path) -> None:
    run = cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", epochs=1))
    leftovers = [run.path / "checkpoints" / ".last.ckpt.x1y2.tmp", run.path / ".history.csv.abc.tmp"]
    for leftover in leftovers:
        leftover.write_bytes(b"\0" * 1024)
    cvtransfer.resume(run.path, epochs=2)
    assert not any(leftover.exists() for leftover in leftovers)
    assert len(cvtransfer.Run(run.path).history) == 2
