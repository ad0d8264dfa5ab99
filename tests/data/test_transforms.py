"""Preprocessing presets and batch mixing."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cvtransfer.data.transforms import Preprocessing, batch_mixer, eval_transform, train_transform

PRE = Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.875)


@pytest.mark.parametrize("augment", ["none", "light", "strong"])
def test_presets_give_normalised_tensors_of_the_input_size(augment: str) -> None:
    image = Image.new("RGB", (50, 40), (255, 255, 255))
    transform = train_transform(PRE, augment)
    for seed in range(40):  # random ops differ per call: try many
        torch.manual_seed(seed)
        tensor = transform(image)
        assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32


def test_eval_transform_uses_mean_and_std() -> None:
    tensor = eval_transform(PRE)(Image.new("RGB", (40, 40), (255, 0, 255)))
    assert tensor[0].mean().item() == pytest.approx(1.0) and tensor[1].mean().item() == pytest.approx(-1.0)


def test_image_size_override() -> None:
    assert PRE.with_size(64).input_size == 64 and PRE.with_size(None) is PRE


def test_mixup_gives_soft_labels() -> None:
    mixer = batch_mixer(mixup=0.4, cutmix=0.0, num_classes=3)
    _, labels = mixer(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))
    assert labels.shape == (4, 3) and torch.allclose(labels.sum(1), torch.ones(4))
    assert batch_mixer(0.0, 0.0, 3) is None
