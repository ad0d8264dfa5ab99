"""Local weights: formats, safe loading, shape-mismatched heads dropped and reported."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from cvtransfer.engine.checkpoints import save_model
from cvtransfer.errors import WeightsError
from cvtransfer.models.factory import build_model
from cvtransfer.models.weights import read_state_dict


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
    with pytest.raises(WeightsError, match=r"no tensor.*matches backbone"):
        build_model("tinycnn", str(tmp_path / "w.safetensors"), num_classes=3)


class _Payload:
    """Unpickling this would run os.system: a stranger's file must never get that far."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
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


def _run_file(tmp_path: Path, backbone: str, classes: list[str], seed: int = 0) -> Path:
    """A model.safetensors as cvtransfer writes it (backbone and class names in its metadata)."""
    torch.manual_seed(seed)
    built = build_model(backbone, "none", num_classes=len(classes))
    metadata = {"backbone": backbone, "classes": classes, "preprocessing": built.preprocessing.to_dict()}
    path = tmp_path / f"{backbone}-{seed}" / "model.safetensors"
    path.parent.mkdir()
    save_model(built.model, path, metadata)
    return path


def test_weights_of_another_architecture_stop_with_the_way_out(tmp_path: Path) -> None:
    path = _run_file(tmp_path, "resnet18", ["a", "b", "c"])
    with pytest.raises(WeightsError, match=r"of backbone 'resnet18', not of --backbone 'resnet34'.*"
                                           r"--allow-partial-weights") as err:
        build_model("resnet34", str(path.parent), num_classes=3)
    assert "\n" not in str(err.value)
    built = build_model("resnet34", str(path.parent), num_classes=3, allow_partial_weights=True)
    assert built.load_report.missing and torch.equal(
        built.model.backbone.conv1.weight, read_state_dict(path)[0]["backbone.conv1.weight"])


def test_a_file_matching_only_batchnorm_counters_is_an_error(tmp_path: Path) -> None:
    counters = {k: v for k, v in _timm_state().items() if k.endswith("num_batches_tracked")}
    assert counters
    save_file(counters, tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match=r"no tensor.*matches backbone"):
        build_model("tinycnn", str(tmp_path / "w.safetensors"), num_classes=3, allow_partial_weights=True)


def test_head_is_reused_for_the_same_class_names_in_another_order(tmp_path: Path) -> None:
    path = _run_file(tmp_path, "tinycnn", ["a", "b", "c"])
    saved = read_state_dict(path)[0]
    built = build_model("tinycnn", str(path), num_classes=3, class_names=["c", "a", "b"])
    assert torch.equal(built.model.head.weight, saved["head.weight"][[2, 0, 1]])
    assert torch.equal(built.model.head.bias, saved["head.bias"][[2, 0, 1]])
    assert "reordered" in built.load_report.head


def test_head_of_other_classes_is_not_reused_even_with_the_same_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _run_file(tmp_path, "tinycnn", ["a", "b", "c"])
    saved = read_state_dict(path)[0]
    with caplog.at_level(logging.INFO, logger="cvtransfer"):
        built = build_model("tinycnn", str(path), num_classes=3, class_names=["x", "y", "z"])
    assert not torch.equal(built.model.head.weight, saved["head.weight"])
    assert torch.equal(built.model.backbone.stem[0].weight, saved["backbone.stem.0.weight"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "new head" in warnings[0] and "x, y, z" in warnings[0]


def test_head_of_a_file_without_class_names_is_reused_and_said_so(tmp_path: Path) -> None:
    state = _timm_state(num_classes=3)
    torch.save(state, tmp_path / "w.pth")
    built = build_model("tinycnn", str(tmp_path / "w.pth"), num_classes=3, class_names=["a", "b", "c"])
    assert torch.equal(built.model.head.weight, state["fc.weight"])
    assert "without class names" in built.load_report.summary()


def test_pickle_refusal_gives_no_torch_advice(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(1), "evil": _Payload(tmp_path / "pwned")}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError) as err:
        build_model("tinycnn", str(tmp_path / "evil.pth"), num_classes=3)
    assert "refused: it holds pickled code, which cvtransfer never runs" in str(err.value)
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)
