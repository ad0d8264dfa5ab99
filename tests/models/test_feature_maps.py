"""Feature maps of torchvision backbones (models.feature_maps): the stages found at each stride, the maps'
values, parameter names and layer groups that carry over from the classification backbone, refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cvtransfer.errors import ConfigError
from cvtransfer.models.backbones import create_backbone
from cvtransfer.models.feature_maps import feature_info, has_feature_maps, intermediates, torchvision_trunk


@pytest.mark.parametrize(("name", "stages"), [
    ("tv/resnet18", ["relu", "layer1", "layer2", "layer3", "layer4"]),
    ("tv/mobilenet_v3_small", ["features.0", "features.1", "features.3", "features.8", "features"]),
    ("tv/efficientnet_b0", ["features.1", "features.2", "features.3", "features.5", "features"]),
])
def test_a_torchvision_trunk_gives_one_map_per_stride_with_its_channels(name: str, stages: list[str]) -> None:
    trunk = torchvision_trunk(create_backbone(name)).module
    info = feature_info(trunk)
    assert has_feature_maps(trunk) and [entry["module"] for entry in info] == stages
    x = torch.randn(2, 3, 96, 128)
    maps = intermediates(trunk, x, list(range(len(info))))
    assert [tuple(m.shape) for m in maps] == [(2, entry["num_chs"], 96 // entry["reduction"], 128 // entry["reduction"])
                                              for entry in info]
    assert [entry["reduction"] for entry in info] == [2, 4, 8, 16, 32]


def test_resnet_maps_are_the_networks_own_activations_and_its_parameters_keep_their_names() -> None:
    torch.manual_seed(0)
    backbone = create_backbone("tv/resnet18")
    original = {name: p.detach().clone() for name, p in backbone.module.named_parameters()}
    net = backbone.module.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        stem = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        expected = net.layer4(net.layer3(net.layer2(net.layer1(stem))))
    trunk = torchvision_trunk(backbone)
    trunk.module.eval()
    with torch.no_grad():
        deepest = intermediates(trunk.module, x, [4])[0]
    assert torch.allclose(deepest, expected, atol=1e-5)
    kept = dict(trunk.module.named_parameters())
    assert set(kept) == set(original)  # resnet18 drops no parameter (its fc is already an Identity)
    assert all(torch.equal(kept[name], original[name]) for name in kept)
    grouped = [name for group in trunk.layer_groups for name in group]
    assert sorted(grouped) == sorted(kept)


def test_the_trunk_follows_train_and_eval_and_backpropagates() -> None:
    trunk = torchvision_trunk(create_backbone("tv/mobilenet_v3_small")).module.train()
    x = torch.randn(2, 3, 64, 64)
    sum(m.mean() for m in intermediates(trunk, x, [0, 4])).backward()
    assert all(p.grad is not None for p in trunk.parameters() if p.requires_grad)
    trunk.eval()
    with torch.no_grad():
        first, second = (intermediates(trunk, x, [4])[0] for _ in range(2))
    assert torch.equal(first, second)  # eval: no dropout, running statistics


def test_timm_backbones_pass_through_unchanged() -> None:
    backbone = create_backbone("resnet18")
    assert torchvision_trunk(backbone) is backbone


def test_a_torchvision_vit_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"--backbone tv/vit_b_16 cannot give feature maps.*pick a timm backbone") as error:
        torchvision_trunk(create_backbone("tv/vit_b_16"))
    assert "\n" not in str(error.value)


def test_a_network_without_a_stride_32_map_is_refused() -> None:
    flat = create_backbone("tv/resnet18")
    flat.module = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
    with pytest.raises(ConfigError, match="no NCHW feature map at stride 32"):
        torchvision_trunk(flat)
