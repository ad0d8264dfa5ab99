"""Atomic writes and safe loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cvtransfer.engine.checkpoints import AtomicCheckpointIO, load_checkpoint
from cvtransfer.errors import WeightsError
from cvtransfer.io import atomic_path, atomic_write_text


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full")  # fails in the middle of writing


def test_failed_checkpoint_write_keeps_the_previous_file(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3), "bad": Unpicklable()}, path)
    assert io.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_atomic_text_write(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two"


class Evil:
    def __reduce__(self):
        return (print, ("never",))


def test_checkpoint_with_objects_is_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": {}, "x": Evil()}, tmp_path / "evil.ckpt")
    with pytest.raises(WeightsError, match="cannot be read safely"):
        load_checkpoint(tmp_path / "evil.ckpt")


def _low_space(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    usage = shutil.disk_usage(".")
    monkeypatch.setattr("cvtransfer.io.shutil.disk_usage", lambda _: usage._replace(free=1024))


def test_a_failed_write_on_a_full_disk_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cvtransfer.errors import DiskFull

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, path)
    _low_space(monkeypatch)  # torch's zip writer reports a full disk as a RuntimeError without errno
    with pytest.raises(DiskFull, match=r"the disk is full: .*last\.ckpt could not be written"):
        io.save_checkpoint({"epoch": 2, "bad": Unpicklable()}, path)
    assert io.load_checkpoint(path)["epoch"] == 1 and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_an_enospc_error_is_a_full_disk_whatever_the_free_space(tmp_path: Path) -> None:
    import errno

    from cvtransfer.errors import DiskFull

    with pytest.raises(DiskFull), atomic_path(tmp_path / "x.txt"):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_stops_fit_in_one_line_and_keeps_the_checkpoints(
        split_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The second epoch's checkpoint finds the disk full: exit 2, one line, epoch 1's checkpoints kept."""
    import errno

    from tests.test_cli import TINY, run_cli

    real_save, calls = torch.save, []

    def save(obj: object, path: object) -> None:
        calls.append(path)
        if len(calls) > 2:  # epoch 1 wrote best.ckpt and last.ckpt
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, path)

    monkeypatch.setattr("cvtransfer.engine.checkpoints.torch.save", save)
    run = tmp_path / "run"
    code, _, err = run_cli(["fit", str(split_dir), *TINY, "--out", str(run), "--epochs", "3"], monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: the disk is full"), lines
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 0
    assert not list(run.rglob("*.tmp"))
