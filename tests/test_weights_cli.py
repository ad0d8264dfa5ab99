"""The weights and backbones errors as the command line shows them: one line, exit status 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cvtransfer.engine.checkpoints import save_model
from cvtransfer.models.factory import build_model
from tests.test_cli import TINY, run_cli


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_weights_are_refused_without_torch_advice(split_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    torch.save({"weights": torch.zeros(1), "evil": _Payload(tmp_path / "pwned")}, tmp_path / "evil.pth")
    code, _, err = run_cli(["fit", str(split_dir), *TINY, "--weights", str(tmp_path / "evil.pth"),
                            "--out", str(tmp_path / "run")], monkeypatch, capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "refused: it holds pickled code, which cvtransfer never runs" in err
    assert "weights_only=False" not in err and not (tmp_path / "pwned").exists()


def test_weights_of_another_architecture_need_allow_partial_weights(split_dir: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    source = build_model("resnet18", "none", 3)
    (tmp_path / "r18").mkdir()
    save_model(source.model, tmp_path / "r18" / "model.safetensors",
               {"backbone": "resnet18", "classes": ["a", "b", "c"],
                "preprocessing": source.preprocessing.to_dict()})
    args = ["fit", str(split_dir), *TINY, "--backbone", "resnet34", "--weights", str(tmp_path / "r18"),
            "--epochs", "1"]
    code, _, err = run_cli([*args, "--out", str(tmp_path / "refused")], monkeypatch, capsys)
    assert code == 2 and "'resnet18'" in err and "'resnet34'" in err and "--allow-partial-weights" in err
    monkeypatch.setenv("COLUMNS", "300")  # going on is tested in tests/models/test_weights.py
    code, out, _ = run_cli(["fit", "--help"], monkeypatch, capsys)
    assert code == 0 and "--allow-partial-weights" in out


def test_backbones_pattern_matching_nothing_exits_2(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(["backbones", "zzzz_nothing*"], monkeypatch, capsys)
    assert code == 2 and out == "" and err.startswith("error: no backbone matches 'zzzz_nothing*'")


def test_backbones_lists_torchvision_regnets(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(["backbones", "tv/regnet_x_4*"], monkeypatch, capsys)
    assert code == 0 and "tv/regnet_x_400mf" in out and "5.09M" in out
