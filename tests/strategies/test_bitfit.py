"""BitFit trains the backbone's biases and the head, nothing else of the backbone."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from cvtransfer.data.folders import discover
from cvtransfer.engine.runner import train
from cvtransfer.models.factory import build_model
from cvtransfer.strategies import STRATEGIES
from tests.conftest import tiny_config


def test_only_backbone_biases_and_the_head_train(split_dir: Path, tmp_path: Path, start_weights: Path) -> None:
    config = tiny_config(split_dir, tmp_path / "run", strategy="bitfit", weights=str(start_weights), epochs=2)
    (tmp_path / "run").mkdir()
    start = load_file(start_weights)
    model = train(config, tmp_path / "run", discover(split_dir)).built.model
    parameters = dict(model.backbone.named_parameters())
    biases = [name for name in parameters if name.endswith(".bias")]
    weights = [name for name in parameters if not name.endswith(".bias")]
    assert biases and weights
    for name in weights:  # conv kernels and BatchNorm scales: bit-identical to the start
        assert not parameters[name].requires_grad, name
        assert torch.equal(parameters[name].detach(), start[name]), f"{name} changed"
    assert all(parameters[name].requires_grad for name in biases)
    changed = [name for name in biases if not torch.equal(parameters[name].detach(), start[name])]
    assert changed, "no backbone bias trained"
    assert all(p.requires_grad for p in model.head.parameters())
    assert not torch.equal(model.head.weight, torch.zeros_like(model.head.weight))


def trainable_after_setup(strategy: str, config_dir: Path) -> tuple[int, int]:
    """(trainable parameters, all parameters) of a fresh tinycnn once ``strategy`` has frozen what it freezes."""
    model = build_model("tinycnn", "none", 3, image_size=16).model
    STRATEGIES.get(strategy)(model, tiny_config(config_dir, config_dir / "run", strategy=strategy)).setup()
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())


def test_trains_far_fewer_parameters_than_full(split_dir: Path) -> None:
    bitfit, total = trainable_after_setup("bitfit", split_dir)
    full, _ = trainable_after_setup("full", split_dir)
    assert full == total
    assert 0 < bitfit < full / 10, (bitfit, full)
