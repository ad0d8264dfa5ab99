"""Atomic writes and safe loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cvtransfer.engine.checkpoints import AtomicCheckpointIO, load_checkpoint
from cvtransfer.errors import WeightsError
from cvtransfer.io import atomic_write_text


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
