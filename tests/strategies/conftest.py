"""Fixtures shared by the strategy tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file


@pytest.fixture
def start_weights(tmp_path: Path) -> Path:
    """A seeded random tinycnn backbone saved as safetensors: the weights every strategy starts from."""
    torch.manual_seed(0)
    path = tmp_path / "start.safetensors"
    save_file(timm.create_model("tinycnn", num_classes=0).state_dict(), path)
    return path
