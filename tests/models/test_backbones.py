"""Backbones by timm and torchvision names, their preprocessing, layer groups and the offline hub path."""

from __future__ import annotations

import socket
import time

import pytest
import torch

from cvtransfer.errors import ConfigError, WeightsError
from cvtransfer.models import backbones
from cvtransfer.models.backbones import create_backbone, resolve_name

ISSUE_NAMES = [
    "resnet50", "tv/resnet50", "vgg16", "inception_v3", "efficientnet_b0", "densenet121",
    "mobilenetv3_large_100", "convnext_tiny", "vit_small_patch16_224", "deit_small_patch16_224",
    "swin_tiny_patch4_window7_224",
]


@pytest.mark.parametrize("name", ISSUE_NAMES)
def test_every_named_family_builds_with_groups_and_preprocessing(name: str) -> None:
    with torch.device("meta"):
        backbone = create_backbone(name)
    grouped = [p for group in backbone.layer_groups for p in group]
    assert sorted(grouped) == sorted(n for n, _ in backbone.module.named_parameters())  # every parameter, once
    assert len(backbone.layer_groups) >= 4
    assert backbone.num_features > 0 and backbone.preprocessing.input_size in (224, 299)


def test_normalisation_comes_from_the_weights_config() -> None:
    with torch.device("meta"):
        vit = create_backbone("vit_small_patch16_224")
        resnet = create_backbone("resnet50")
    assert vit.preprocessing.mean == (0.5, 0.5, 0.5) and vit.preprocessing.std == (0.5, 0.5, 0.5)
    assert resnet.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))


def test_torchvision_backbone_outputs_pooled_features() -> None:
    backbone = create_backbone("tv/resnet18")
    assert backbone.module(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    assert backbone.classifier_prefix == "fc"
    assert backbone.layer_groups[0][:2] == ["conv1.weight", "bn1.weight"]


def test_names_resolve_to_their_library() -> None:
    assert resolve_name("resnet18") == ("timm", "resnet18")
    assert resolve_name("tv/resnet18") == ("torchvision", "resnet18")
    assert resolve_name("vit_b_16") == ("torchvision", "vit_b_16")  # only torchvision has it


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(ConfigError, match=r"did you mean.*resnet50"):
        resolve_name("resnet5O")


def test_imagenet_offline_fails_at_once_with_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(backbones.socket, "create_connection", unreachable)
    monkeypatch.setattr(backbones, "_hf_cached", lambda repo: False)
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=r"unreachable.*--weights path/to/resnet18"):
        create_backbone("resnet18", pretrained=True)
    with pytest.raises(WeightsError, match=r"download\.pytorch\.org is unreachable"):
        create_backbone("tv/resnet18", pretrained=True)
    assert time.perf_counter() - start < 5


def test_model_without_published_weights() -> None:
    with pytest.raises(WeightsError, match="no published pretrained weights"):
        create_backbone("tinycnn", pretrained=True)


@pytest.mark.parametrize("name", ["tv/regnet_x_400mf", "tv/squeezenet1_1"])
def test_parameters_are_counted_for_models_that_cannot_be_built_on_meta(name: str) -> None:
    params, size = backbones.count_parameters(name)
    built = create_backbone(name)
    assert params == sum(p.numel() for p in built.module.parameters()) and size == 224
    assert built.module(torch.zeros(1, 3, 64, 64)).shape == (1, built.num_features)


def test_a_pattern_matching_nothing_is_an_error_with_close_names() -> None:
    with pytest.raises(ConfigError, match=r"no backbone matches 'tv/resnt\*': close names: .*tv/resnet"):
        backbones.list_backbones("tv/resnt*")
    with pytest.raises(ConfigError, match=r"cvtransfer backbones 'resnet\*'"):
        backbones.list_backbones("zzzz_nothing*")
