"""Two tiny candidate backbones with weights saved here: tinycnn with a 5-class source head, lenet without one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cvtransfer.engine.checkpoints import save_model
from cvtransfer.models.factory import build_model

IMAGE_SIZE = 28  # lenet's input size


@pytest.fixture
def candidate_weights(tmp_path: Path) -> dict[str, Path]:
    """{"tinycnn": a cvtransfer model file with backbone and head, "lenet": backbone tensors only}."""
    torch.manual_seed(0)
    tiny = build_model("tinycnn", "none", 5, IMAGE_SIZE)
    save_model(tiny.model, tmp_path / "tiny_source.safetensors", {})
    lenet = build_model("lenet", "none", 5, IMAGE_SIZE)
    body = {k: v.contiguous() for k, v in lenet.model.state_dict().items() if k.startswith("backbone.")}
    save_file(body, str(tmp_path / "lenet_body.safetensors"))
    return {"tinycnn": tmp_path / "tiny_source.safetensors", "lenet": tmp_path / "lenet_body.safetensors"}


def weights_pairs(weights: dict[str, Path]) -> str:
    """The --weights value NAME=PATH,NAME=PATH."""
    return ",".join(f"{name}={path}" for name, path in weights.items())
