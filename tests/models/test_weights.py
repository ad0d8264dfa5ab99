"""Local weights: formats, safe loading, shape-mismatched heads dropped and reported."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from cvtransfer.errors import WeightsError
from cvtransfer.models.factory import build_model


def _timm_state(num_classes: int = 7) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return timm.create_model("tinycnn", num_classes=num_classes).state_dict()


def test_safetensors_state_dict_loads_and_mismatched_head_is_dropped(tmp_path: Path) -> None:
    state = _timm_state(num_classes=7)
    save_file(state, tmp_path / "w.safetensors")
    built = build_model("tinycnn", str(tmp_path / "w.safetensors"), num_classes=3)
    assert torch.equal(built.model.backbone.stem[0].weight, state["stem.0.weight"])
    report = built.load_report
    assert report.missing == [] and report.unexpected == []
    assert any(d.startswith("head.weight: shape (7, 128)") for d in report.dropped)


def test_matching_head_is_kept(tmp_path: Path) -> None:
    state = _timm_state(num_classes=3)
    torch.save(state, tmp_path / "w.pth")
    built = build_model("tinycnn", str(tmp_path / "w.pth"), num_classes=3)
    assert torch.equal(built.model.head.weight, state["fc.weight"]) and not built.load_report.dropped


def test_lightning_style_checkpoint_is_unwrapped(tmp_path: Path) -> None:
    state = {f"model.{k}": v for k, v in _timm_state().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "w.ckpt")
    built = build_model("tinycnn", str(tmp_path / "w.ckpt"), num_classes=7)
    assert built.load_report.loaded == len(state)


def test_unrelated_checkpoint_is_an_error(tmp_path: Path) -> None:
    save_file({"something.else": torch.zeros(2)}, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match="no tensor.*matches backbone"):
        build_model("tinycnn", str(tmp_path / "w.safetensors"), num_classes=3)


class _Payload:
    """Unpickling this would run os.system: a stranger's file must never get that far."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"weights": torch.zeros(1), "evil": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="refused"):
        build_model("tinycnn", str(tmp_path / "evil.pth"), num_classes=3)
    assert not marker.exists()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        build_model("tinycnn", str(tmp_path / "nope.safetensors"), num_classes=3)
