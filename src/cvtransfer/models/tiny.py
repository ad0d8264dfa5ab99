"""Small CNNs registered in timm's registry, for the demo, the tests and the digits benchmarks.

They answer timm's model interface (``forward_features``, ``forward_head``, ``reset_classifier``,
``group_matcher``, ``pretrained_cfg``) and are built by timm's ``build_model_with_cfg``, so the rest
of cvtransfer treats them like any timm model.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn


def _cfg(input_size: int, **kwargs: object) -> dict:
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, input_size, input_size),
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "first_conv": "stem.0",
        "classifier": "fc",
        **kwargs,
    }


class _TimmInterface:
    """timm's model interface for a ``stem`` + ``stages`` network with a ``self.fc`` classifier."""

    num_classes: int
    num_features: int
    fc: nn.Module
    stem: nn.Module
    stages: nn.Sequential

    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyCNN(_TimmInterface, nn.Module):
    """A stem and three conv-BN-ReLU stages, global average pooling (about 100k parameters)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths: tuple[int, ...] = (16, 32, 64, 128),
                 drop_rate: float = 0.0, **kwargs: object) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.stem = _conv_bn(in_chans, widths[0])
        self.stages = nn.Sequential(
            *[nn.Sequential(_conv_bn(widths[i], widths[i + 1], stride=2), _conv_bn(widths[i + 1], widths[i + 1]))
              for i in range(len(widths) - 1)]
        )
        self.drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)


class LeNet(_TimmInterface, nn.Module):
    """LeNet as in TLlib's digits examples: two conv layers and a 500-wide fully connected layer."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.5, **kwargs: object) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = 500
        self.stem = nn.Sequential(nn.Conv2d(in_chans, 20, 5), nn.MaxPool2d(2), nn.ReLU())
        self.stages = nn.Sequential(
            nn.Sequential(nn.Conv2d(20, 50, 5), nn.Dropout2d(drop_rate), nn.MaxPool2d(2), nn.ReLU()),
            nn.Sequential(nn.Flatten(), nn.Linear(50 * 4 * 4, 500), nn.ReLU(), nn.Dropout(drop_rate)),
        )
        self.reset_classifier(num_classes)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.fc(x)


class Conv4(_TimmInterface, nn.Module):
    """The Conv-4 of the few-shot papers (Vinyals et al. 2016, Snell et al. 2017): four blocks of 64 3x3
    filters, BatchNorm, ReLU and 2x2 max-pooling. The maps are averaged into the feature (64 wide); at 28 px
    (Omniglot) the last map is 1x1, so that equals the papers' flattened output."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 64, drop_rate: float = 0.0,
                 **kwargs: object) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = width

        def block(cin: int) -> nn.Sequential:
            return nn.Sequential(*_conv_bn(cin, width), nn.MaxPool2d(2))

        self.stem = block(in_chans)
        self.stages = nn.Sequential(block(width), block(width), block(width))
        self.drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)


default_cfgs = generate_default_cfgs({"tinycnn": _cfg(32), "lenet": _cfg(28), "conv4": _cfg(28)})


@register_model
def tinycnn(pretrained: bool = False, **kwargs: Any) -> TinyCNN:
    """Tiny 4-stage CNN for 32 px images: demo and tests."""
    return build_model_with_cfg(TinyCNN, "tinycnn", pretrained, **kwargs)


@register_model
def lenet(pretrained: bool = False, **kwargs: Any) -> LeNet:
    """LeNet for 28 px digits (TLlib's MNIST/USPS backbone)."""
    return build_model_with_cfg(LeNet, "lenet", pretrained, **kwargs)


@register_model
def conv4(pretrained: bool = False, **kwargs: Any) -> Conv4:
    """Conv-4 for 28 px (Omniglot) few-shot learning, 64 features."""
    return build_model_with_cfg(Conv4, "conv4", pretrained, **kwargs)
