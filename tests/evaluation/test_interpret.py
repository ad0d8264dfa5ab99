"""Grad-CAM's layer: a map of at least 2x2 that the class score's gradient reaches, in every family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cvtransfer.evaluation import interpret
from cvtransfer.models.factory import build_model
from cvtransfer.models.transfer_model import TransferModel
from tests.conftest import write_class_images

MAX_PIXELS = 10**8


@pytest.fixture
def two_images(tmp_path: Path) -> list[tuple[str, int]]:
    write_class_images(tmp_path / "images", {"a": 1, "b": 1}, size=32)
    return [(str(p), i) for i, p in enumerate(sorted((tmp_path / "images").rglob("*.png")))]


def cam_of(name: str, size: int, samples: list[tuple[str, int]]) -> tuple[np.ndarray, str]:
    """Grad-CAM maps of the predicted class of random-init (seeded) ``name`` at ``size`` px, and the layer."""
    torch.manual_seed(0)
    built = build_model(name, "none", 3, size)
    predictions = interpret.predict_samples(built.model, samples, built.preprocessing, batch_size=2)
    predicted = predictions.predicted.tolist()
    _, maps, layer = interpret.grad_cam(built.model, samples, built.preprocessing, predicted, MAX_PIXELS)
    return maps, layer


def output_shapes(backbone: nn.Module, names: list[str], size: int) -> dict[str, tuple[int, ...]]:
    """The output shapes of the modules ``names`` for one blank image."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [backbone.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape))) for n in names]
    with torch.no_grad():
        backbone.eval()(torch.zeros(1, 3, size, size))
    for handle in handles:
        handle.remove()
    return shapes


# ViT and Swin at 224 px (their other sizes are models/' concern); CNNs small. The ViT's last block
# (blocks.11) passes gradient to the class token only, so its maps were blank before.
@pytest.mark.parametrize(("name", "size", "layer"), [
    ("resnet18", 64, "layer4"),
    ("vit_tiny_patch16_224", 224, "blocks.11.norm1"),
    ("swin_tiny_patch4_window7_224", 224, "layers.3"),
    ("convnext_atto", 64, "stages.3"),
])
def test_grad_cam_maps_are_not_blank_for_each_family(name: str, size: int, layer: str,
                                                     two_images: list[tuple[str, int]]) -> None:
    maps, chosen = cam_of(name, size, two_images)
    assert chosen == layer
    assert maps.shape == (2, size, size) and np.isfinite(maps).all()
    for heat in maps:
        assert heat.max() > heat.min()


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_small_inputs_walk_back_to_a_map_of_at_least_2x2(name: str,
                                                          two_images: list[tuple[str, int]]) -> None:
    torch.manual_seed(0)
    built = build_model(name, "none", 3, 32)
    backbone = built.model.backbone
    last = backbone.feature_info[-1]["module"]
    target = interpret.cam_target(built.model, 32)
    shapes = output_shapes(backbone, [last, target.name], 32)
    assert shapes[last][2:] == (1, 1)  # the last stage is 1x1 at 32 px: it cannot be the target
    assert min(shapes[target.name][2:]) >= 2
    maps, _ = cam_of(name, 32, two_images)
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all() and maps.max() > maps.min()


def test_no_spatial_map_is_a_value_error_that_says_why() -> None:
    backbone = nn.Sequential(nn.Conv2d(3, 4, 8), nn.ReLU(), nn.Flatten())  # 8 px in, 1x1 out
    model = TransferModel(backbone, 4, 2, [[n for n, _ in backbone.named_parameters()]])
    with pytest.raises(ValueError, match=r"no feature map of the backbone is at least 2x2 at 8 px input"):
        interpret.cam_target(model, 8)


def test_layers_without_gradient_are_passed_over() -> None:
    """A map the score does not depend on (only its first position is read) is not the Grad-CAM target."""

    class FirstPixel(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :, 0, 0]

    backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), FirstPixel())
    model = TransferModel(backbone, 4, 2, [[n for n, _ in backbone.named_parameters()]])
    # both maps are 8x8; the score reads pixel (0, 0) of the second, which sees a 2x2 corner of the first
    assert interpret.cam_target(model, 8).name == "0"
