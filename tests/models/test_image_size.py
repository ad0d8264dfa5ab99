"""--image-size for models whose shape depends on it (ViT, Swin): built at that size, embeddings resampled."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

import cvtransfer
from cvtransfer.engine.checkpoints import save_model
from cvtransfer.errors import ConfigError
from cvtransfer.models.factory import build_model
from tests.conftest import tiny_config, write_split_folders

VIT = "vit_tiny_patch16_224"
SWIN = "swin_tiny_patch4_window7_224"


@pytest.fixture
def small_split(tmp_path: Path) -> Path:
    """train/ val/ test/ with three classes and very few images (transformers are slow on a CPU)."""
    return write_split_folders(tmp_path / "data", 3, 1, 2)


@pytest.mark.parametrize("name", [VIT, SWIN])
def test_transformer_fits_evaluates_and_predicts_at_64_px(name: str, small_split: Path,
                                                          tmp_path: Path) -> None:
    run = cvtransfer.fit(tiny_config(small_split, tmp_path / "run", backbone=name, image_size=64, epochs=1,
                                     batch_size=9))
    assert run.preprocessing.input_size == 64
    metrics = run.evaluate()  # what cvtransfer.evaluate / predict do, sharing one rebuilt model
    assert metrics["split"] == "test" and 0.0 <= metrics["accuracy"] <= 1.0
    rows = run.predict([small_split / "test" / "a"])
    assert len(rows) == 2 and {row["label"] for row in rows} <= {"a", "b", "c"}


def _vit_state(size: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model(VIT, num_classes=0, img_size=size).state_dict()


def test_vit_saved_at_224_loads_into_a_64_px_model_with_resampled_position_embeddings(tmp_path: Path) -> None:
    state = _vit_state(224)
    save_file(state, tmp_path / "vit224.safetensors")
    built = build_model(VIT, str(tmp_path / "vit224.safetensors"), num_classes=3, image_size=64)
    expected = resample_abs_pos_embed(state["pos_embed"], new_size=(4, 4), num_prefix_tokens=1)
    assert built.model.backbone.pos_embed.shape == (1, 17, 192) and built.preprocessing.input_size == 64
    assert torch.allclose(built.model.backbone.pos_embed, expected)
    assert built.load_report.missing == [] and built.load_report.dropped == []


def test_cvtransfer_vit_at_64_loads_at_its_own_size_or_resampled_to_224(tmp_path: Path) -> None:
    small = build_model(VIT, "none", num_classes=3, image_size=64)
    assert small.model.backbone.pos_embed.shape == (1, 17, 192)
    metadata = {"backbone": VIT, "classes": ["a", "b", "c"], "preprocessing": small.preprocessing.to_dict()}
    save_model(small.model, tmp_path / "model.safetensors", metadata)
    same = build_model(VIT, str(tmp_path), num_classes=3)  # no --image-size: the file's 64 px
    assert same.preprocessing.input_size == 64
    assert torch.equal(same.model.backbone.pos_embed, small.model.backbone.pos_embed)
    large = build_model(VIT, str(tmp_path), num_classes=3, image_size=224)
    assert large.model.backbone.pos_embed.shape == (1, 197, 192) and large.load_report.dropped == []
    assert large.model(torch.zeros(1, 3, 224, 224)).shape == (1, 3)


def test_an_image_size_below_the_patch_size_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match="needs --image-size >= 16"):
        build_model(VIT, "none", num_classes=3, image_size=8)
