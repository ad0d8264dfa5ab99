"""Frozen BatchNorm stays frozen whatever calls train()."""

from __future__ import annotations

import torch

from cvtransfer.models.factory import build_model


def test_frozen_norm_layers_stay_in_eval_mode_and_keep_statistics() -> None:
    model = build_model("resnet18", "none", num_classes=3).model
    model.set_frozen_groups(range(2), requires_grad=False)
    stem_bn, late_bn = model.backbone.bn1, model.backbone.layer4[0].bn1
    before = stem_bn.running_mean.clone()
    for _ in range(2):  # a trainer calls train() every epoch
        model.train()
        model(torch.randn(4, 3, 32, 32))
    assert not stem_bn.training and late_bn.training
    assert torch.equal(stem_bn.running_mean, before)
    assert not any(p.requires_grad for p in model.group_parameters(0))
    assert all(p.requires_grad for p in model.group_parameters(2))


def test_thawing_restores_train_mode() -> None:
    model = build_model("tinycnn", "none", num_classes=3).model
    model.set_frozen_groups(range(model.num_groups))
    model.train()
    assert not model.backbone.stem[1].training
    model.set_frozen_groups([])
    assert model.backbone.stem[1].training
