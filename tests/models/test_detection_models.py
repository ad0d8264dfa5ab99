"""Detection models: torchvision's detectors on timm backbones, their norm policies, anchors and COCO weights."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from timm.layers import BatchNormAct2d, FrozenBatchNormAct2d, GroupNormAct
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from cvtransfer.errors import ConfigError, DataError, WeightsError
from cvtransfer.models import backbones
from cvtransfer.models.backbones import create_backbone
from cvtransfer.models.detection import (
    DETECTORS,
    DetectionModel,
    apply_norm_policy,
    build_detector,
    from_model_outputs,
    group_norm,
    to_model_targets,
    torchvision_detector,
)
from cvtransfer.models.metadata import TORCHVISION_DETECTORS

NUM_CLASSES = 2
SWIN = "swin_tiny_patch4_window7_224"
# fewer proposals and sampled RoIs than torchvision's defaults: the same code, a fraction of the CPU time
FAST = {"fasterrcnn": {"rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 50, "box_batch_size_per_image": 32,
                       "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50}}
COMBOS = [(detector, backbone) for backbone in ("resnet18", "efficientnet_b0", "convnext_atto") for detector in DETECTORS]
COMBOS += [("fasterrcnn", SWIN), ("ssdlite", SWIN)]  # an FPN and SSDlite's extras on a fixed-size transformer
COMBOS += [("fasterrcnn", "tv/resnet18"), ("retinanet", "tv/mobilenet_v3_small")]  # torchvision trunks


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny detectors run fastest on one thread (two contend on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_detector(detector: str, backbone: str = "resnet18", **kwargs: object) -> DetectionModel:
    torch.manual_seed(0)
    return build_detector(backbone, detector, NUM_CLASSES, min_size=64, max_size=96, score_thresh=0.0,
                          **{**FAST.get(detector, {}), **kwargs})


def images_and_targets() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two images of different sizes: one with a box of each class, one background image (no boxes)."""
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 30.0, 40.0], [20.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([0, 1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    return images, targets


@pytest.mark.parametrize(("detector", "backbone"), COMBOS)
def test_a_training_step_gives_finite_losses_and_gradients_in_the_backbone(detector: str, backbone: str) -> None:
    model = tiny_detector(detector, backbone).train()
    losses = model(*images_and_targets())
    assert losses and all(torch.isfinite(value) for value in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(("detector", "backbone"), COMBOS)
def test_eval_predicts_boxes_inside_each_image_with_user_class_indices(detector: str, backbone: str) -> None:
    model = tiny_detector(detector, backbone).eval()
    images, _ = images_and_targets()
    with torch.no_grad():
        outputs = model(images)
    for image, output in zip(images, outputs):
        boxes, labels = output["boxes"], output["labels"]
        assert len(boxes) > 0 and len(labels) == len(boxes) == len(output["scores"])
        height, width = image.shape[-2:]
        assert (boxes >= 0).all() and (boxes[:, 0::2] <= width).all() and (boxes[:, 1::2] <= height).all()
        assert labels.min() >= 0 and labels.max() <= NUM_CLASSES - 1  # never NUM_CLASSES: the shift is undone


def test_labels_shift_past_background_and_back() -> None:
    _, targets = images_and_targets()
    assert to_model_targets(targets, NUM_CLASSES)[0]["labels"].tolist() == [1, 2]
    assert targets[0]["labels"].tolist() == [0, 1]  # the caller's targets untouched
    raw = [{"boxes": torch.ones(3, 4), "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([2, 0, 1])}]
    assert from_model_outputs(raw)[0]["labels"].tolist() == [1, 0]  # background (0) dropped


def test_a_label_outside_the_classes_is_a_data_error() -> None:
    _, targets = images_and_targets()
    targets[0]["labels"] = torch.tensor([0, NUM_CLASSES])
    with pytest.raises(DataError, match=r"0\.\.1"):
        to_model_targets(targets, NUM_CLASSES)


def test_a_degenerate_box_is_a_data_error() -> None:
    _, targets = images_and_targets()
    targets[0]["boxes"][0] = torch.tensor([30.0, 5.0, 30.0, 40.0])  # zero width
    with pytest.raises(DataError, match="x2 > x1"):
        to_model_targets(targets, NUM_CLASSES)


def test_training_without_targets_is_an_error() -> None:
    model = tiny_detector("ssdlite").train()
    with pytest.raises(ConfigError, match="needs targets"):
        model(images_and_targets()[0])


@pytest.mark.parametrize("backbone", ["resnet18", "tv/resnet18"])
def test_layer_groups_hold_every_trunk_parameter_and_the_head_none(backbone: str) -> None:
    model = tiny_detector("retinanet", backbone)
    grouped = [name for group in model.layer_groups for name in group]
    assert sorted(grouped) == sorted(name for name, _ in model.backbone.named_parameters())
    assert not {id(p) for p in model.head.parameters()} & {id(p) for p in model.backbone.parameters()}


def test_frozen_policy_keeps_statistics_and_activations() -> None:
    resnet = timm.create_model("resnet18")
    mean = resnet.bn1.running_mean.clone().uniform_()
    resnet.bn1.running_mean.copy_(mean)
    apply_norm_policy(resnet, "frozen")
    assert isinstance(resnet.bn1, FrozenBatchNorm2d) and torch.equal(resnet.bn1.running_mean, mean)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in resnet.modules())
    efficientnet = apply_norm_policy(timm.create_model("efficientnet_b0"), "frozen")
    assert isinstance(efficientnet.bn1, FrozenBatchNormAct2d) and isinstance(efficientnet.bn1.act, nn.SiLU)


def test_group_policy_replaces_batchnorm_keeping_affine_and_activation() -> None:
    efficientnet = timm.create_model("efficientnet_b0")
    count = sum(isinstance(m, nn.BatchNorm2d) for m in efficientnet.modules())
    weight = efficientnet.bn1.weight.detach().clone().uniform_()
    efficientnet.bn1.weight.data.copy_(weight)
    apply_norm_policy(efficientnet, "group")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in efficientnet.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in efficientnet.modules()) == count
    assert isinstance(efficientnet.bn1, GroupNormAct) and isinstance(efficientnet.bn1.act, nn.SiLU)
    assert torch.equal(efficientnet.bn1.weight, weight)
    assert group_norm(256).num_groups == 32 and group_norm(40).num_groups == 20  # at most 32, dividing


def test_batch_policy_keeps_trainable_batchnorm() -> None:
    efficientnet = apply_norm_policy(timm.create_model("efficientnet_b0"), "batch")
    assert isinstance(efficientnet.bn1, BatchNormAct2d) and efficientnet.bn1.weight.requires_grad


def test_ssdlite_new_layers_follow_the_policy() -> None:
    norms = {policy: {type(m) for m in tiny_detector("ssdlite", norm=policy).head.modules()}
             for policy in ("batch", "group")}
    assert nn.BatchNorm2d in norms["batch"] and nn.GroupNorm not in norms["batch"]
    assert nn.GroupNorm in norms["group"] and nn.BatchNorm2d not in norms["group"]


def test_unknown_policy_and_detector_suggest_names() -> None:
    with pytest.raises(ConfigError, match="did you mean frozen"):
        apply_norm_policy(nn.Identity(), "frozn")
    with pytest.raises(ConfigError, match="did you mean retinanet"):
        build_detector("resnet18", "retina", NUM_CLASSES)


def test_anchor_sizes_override_torchvision_defaults() -> None:
    sizes = (16, 32, 64, 128, 256)
    assert tiny_detector("fasterrcnn", anchor_sizes=sizes).head.rpn.anchor_generator.sizes == tuple((s,) for s in sizes)
    assert tiny_detector("retinanet", anchor_sizes=sizes).head.anchor_generator.sizes[0] == (16, 20, 25)
    ssd = tiny_detector("ssdlite", anchor_sizes=(8, 16, 24, 32, 48, 64))
    assert ssd.head.anchor_generator.scales == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.0])
    with pytest.raises(ConfigError, match="needs 5, one per feature level"):
        tiny_detector("fcos", anchor_sizes=(16, 32))


def test_a_plain_vit_is_a_one_line_error() -> None:
    vit = create_backbone("vit_tiny_patch16_224", image_size=64)
    with pytest.raises(ConfigError, match=r"strides \[16\].*not a plain ViT") as err:
        build_detector(vit, "retinanet", NUM_CLASSES, min_size=64)
    assert "\n" not in str(err.value)


def test_torchvision_detector_loads_a_local_state_dict_with_a_new_predictor(tmp_path: Path) -> None:
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    reference = torchvision.models.get_model(name, weights=None, weights_backbone=None)
    torch.save(reference.state_dict(), tmp_path / "coco.pth")
    model = torchvision_detector(name, NUM_CLASSES, tmp_path / "coco.pth")
    assert model.head.roi_heads.box_predictor.cls_score.out_features == NUM_CLASSES + 1
    trunk = dict(model.backbone.named_parameters())
    assert torch.equal(trunk["1.block.0.0.weight"], reference.backbone.body.get_submodule("1.block.0.0").weight)
    assert torch.equal(model.head.backbone.fpn.layer_blocks[0][0].weight, reference.backbone.fpn.layer_blocks[0][0].weight)
    assert not {id(p) for p in model.head.parameters()} & {id(p) for p in trunk.values()}
    with torch.no_grad():
        labels = model.eval()([torch.rand(3, 64, 80)])[0]["labels"]
    assert labels.numel() == 0 or labels.max() <= NUM_CLASSES - 1


def test_the_whole_detectors_offered_are_torchvisions_of_the_four_families() -> None:
    offered = [name for name in torchvision.models.list_models(module=torchvision.models.detection)
               if name.startswith(DETECTORS)]
    assert sorted(TORCHVISION_DETECTORS) == sorted(offered)


def test_coco_class_layers_never_load_even_for_as_many_classes(tmp_path: Path) -> None:
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, weights=None, weights_backbone=None)  # 91 outputs: COCO's
    torch.save(reference.state_dict(), tmp_path / "coco.pth")
    model = torchvision_detector(name, 90, tmp_path / "coco.pth")  # 90 classes of one's own: the same shapes
    predictor, coco = model.head.roi_heads.box_predictor, reference.roi_heads.box_predictor
    assert predictor.cls_score.weight.shape == coco.cls_score.weight.shape
    assert not torch.equal(predictor.cls_score.weight, coco.cls_score.weight)
    assert not torch.equal(predictor.bbox_pred.weight, coco.bbox_pred.weight)
    assert torch.equal(model.head.roi_heads.box_head.fc6.weight, reference.roi_heads.box_head.fc6.weight)


def test_torchvision_detector_refuses_another_models_weights(tmp_path: Path) -> None:
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(WeightsError, match="not this detector's weights"):
        torchvision_detector("ssdlite320_mobilenet_v3_large", NUM_CLASSES, tmp_path / "resnet18.pth")


def test_torchvision_detector_offline_without_a_file_is_a_one_line_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(backbones.socket, "create_connection", unreachable)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing cached
    with pytest.raises(WeightsError, match=r"COCO weights for fcos_resnet50_fpn.*https://") as err:
        torchvision_detector("fcos_resnet50_fpn", NUM_CLASSES)
    assert "\n" not in str(err.value)
