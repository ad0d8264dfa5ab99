"""A segmentation network: a pretrained backbone's feature maps under a decoder.

The encoder is the backbone cvtransfer builds for classification (any timm name or torchvision CNN, with
the weights of ``fit``: hub, local file, run folder, packaged ImageNet weights), read through timm's
``forward_intermediates`` or torchvision's feature extractor (:mod:`cvtransfer.models.feature_maps`) so its parameter names, layer groups and frozen-BatchNorm handling stay the
ones every strategy knows. The decoders are segmentation_models_pytorch's (U-Net, FPN, DeepLabV3+)
and torchvision's FCN head: the model is a :class:`TransferModel` whose ``head`` is the decoder, so
``--strategy linear`` trains the decoder on a frozen encoder and layer-wise LR gives the encoder a
smaller rate than the decoder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cvtransfer.errors import ConfigError
from cvtransfer.models.backbones import Backbone
from cvtransfer.models.feature_maps import feature_info, has_feature_maps, intermediates, torchvision_trunk
from cvtransfer.models.transfer_model import TransferModel

DECODERS = ("unet", "fpn", "deeplabv3plus", "fcn")
MAX_REDUCTION = 32  # the deepest feature map the decoders read (stride 32)


class FeatureMaps:
    """Which feature maps of a backbone the decoder reads, in segmentation_models_pytorch's order: the
    input, then strides 2..32 (a ViT: the input and its last block).

    Models whose first map is at stride 4 (ConvNeXt, Swin) get an empty stride-2 map, as smp's own timm
    encoder does. Layers after the last map used (the classifier's norm and convolutions) are pruned from
    ``module``. Not a module itself: the backbone stays registered once, as the model's ``backbone``.
    """

    def __init__(self, module: Any, name: str) -> None:
        if not has_feature_maps(module):
            raise ConfigError(f"--backbone {name} cannot give feature maps for segmentation (timm's "
                              "forward_intermediates): pick a timm CNN or transformer such as resnet18, "
                              "efficientnet_b0, convnext_atto or tf_efficientnet_lite0, or a torchvision CNN")
        info = feature_info(module)
        reductions = [int(entry["reduction"]) for entry in info]
        usable = [i for i, r in enumerate(reductions) if r <= MAX_REDUCTION]
        multi_scale = len({reductions[i] for i in usable}) > 1
        # a single-stride model (ViT) gives its last block; a pyramid gives its last map of each stride
        self.indices = ([usable[-1]] if not multi_scale
                        else [max(i for i in usable if reductions[i] == r)
                              for r in sorted({reductions[i] for i in usable})])
        self.reductions = [reductions[i] for i in self.indices]
        self.channels = [int(info[i]["num_chs"]) for i in self.indices]
        if hasattr(module, "prune_intermediate_layers"):
            module.prune_intermediate_layers(self.indices, prune_norm=False, prune_head=True)
        self.pyramid = multi_scale and self.reductions[-1] == MAX_REDUCTION
        self.empty_stride_two = self.pyramid and self.reductions[0] == 4

    @property
    def out_channels(self) -> list[int]:
        """Channels of :meth:`forward`'s maps (the input's 3 first)."""
        if not self.pyramid:
            return [3, self.channels[-1]]
        return [3, *([0] if self.empty_stride_two else []), *self.channels[-5 + int(self.empty_stride_two):]]

    def __call__(self, module: Any, x: torch.Tensor) -> list[torch.Tensor]:
        maps = intermediates(module, x, self.indices)
        if not self.pyramid:
            return [x, maps[-1]]
        maps = maps[-5 + int(self.empty_stride_two):]
        if self.empty_stride_two:
            empty = x.new_empty(x.shape[0], 0, x.shape[2] // 2, x.shape[3] // 2)
            return [x, empty, *maps]
        return [x, *maps]


class Decoder(nn.Module):
    """A decoder and its 1-class-per-channel head: feature maps in, logits at the input's size out."""

    def __init__(self, kind: str, encoder_channels: list[int], num_classes: int, pyramid: bool) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp
        from torchvision.models.segmentation.fcn import FCNHead

        if kind not in DECODERS:
            raise ConfigError(f"--decoder {kind} is unknown: choose one of {', '.join(DECODERS)}")
        if kind != "fcn" and not pyramid:
            raise ConfigError(f"--decoder {kind} needs feature maps at strides 4 to 32; this backbone gives one "
                              "stride (a ViT): use --decoder fcn, or a CNN / Swin backbone")
        self.kind = kind
        self.num_classes = num_classes
        channels = list(encoder_channels)
        if kind == "unet":
            self.decoder: nn.Module = smp.decoders.unet.decoder.UnetDecoder(
                encoder_channels=channels, decoder_channels=(256, 128, 64, 32, 16), n_blocks=5)
            self.head: nn.Module = smp.base.SegmentationHead(16, num_classes, kernel_size=3)
        elif kind == "fpn":
            self.decoder = smp.decoders.fpn.decoder.FPNDecoder(
                encoder_channels=channels, encoder_depth=5, pyramid_channels=256, segmentation_channels=128,
                dropout=0.2, merge_policy="add")
            self.head = smp.base.SegmentationHead(128, num_classes, kernel_size=1, upsampling=4)
        elif kind == "deeplabv3plus":
            decoder = smp.decoders.deeplabv3.decoder.DeepLabV3PlusDecoder(
                encoder_channels=channels, encoder_depth=5, out_channels=256, atrous_rates=(12, 24, 36),
                output_stride=16, aspp_separable=True, aspp_dropout=0.5)
            # the encoder is not dilated (output stride 32, not DeepLab's 16): the ASPP output is 8x coarser
            # than the stride-4 map it joins
            decoder.up = nn.Upsample(scale_factor=8, mode="bilinear", align_corners=True)
            self.decoder = decoder
            self.head = smp.base.SegmentationHead(256, num_classes, kernel_size=1, upsampling=4)
        else:
            self.decoder = FCNHead(channels[-1], num_classes)
            self.head = nn.Identity()

    @property
    def out_features(self) -> int:
        return self.num_classes

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        x = maps[0]
        logits = self.head(self.decoder(maps[-1] if self.kind == "fcn" else maps))
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits


class SegmentationModel(TransferModel):
    """``decoder(feature_maps(x))``: a :class:`TransferModel` whose head is a decoder over the maps.

    ``backbone`` is the feature-map encoder (its parameters named as the classification backbone's, so
    weight files and layer groups carry over); there is no bottleneck and no dropout on the maps.
    """

    def __init__(self, backbone: Backbone, decoder: str, num_classes: int) -> None:
        backbone = torchvision_trunk(backbone)
        maps = FeatureMaps(backbone.module, backbone.name)  # prunes what the decoder does not read
        owned = {name for name, _ in backbone.module.named_parameters()}
        groups = [[name for name in group if name in owned] for group in backbone.layer_groups]
        super().__init__(backbone.module, 1, num_classes, [group for group in groups if group])
        self.maps = maps
        self.head = Decoder(decoder, maps.out_channels, num_classes, maps.pyramid)  # type: ignore[assignment]
        self.architecture["decoder"] = decoder  # saved with the model: what rebuilds it

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def features_dim(self) -> int:
        return 0

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return self.maps(self.backbone, x)

    def embed(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return self.forward_features(x)

    def classify(self, embedding: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return self.head(embedding)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a segmentation model has no head on pooled features")
