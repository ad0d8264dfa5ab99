"""A backbone's multi-scale feature maps, whatever its library: timm's ``forward_intermediates`` or, for a
torchvision network, torchvision's own ``create_feature_extractor``.

Segmentation decoders and detection FPNs read maps through :func:`feature_info` and :func:`intermediates`
only. A torchvision backbone becomes a trunk (:func:`torchvision_trunk`): an FX graph of the network up to its
last map at each stride 2..32, whose parameters keep the network's names, so weight files, layer groups and
frozen BatchNorm carry over as they do for a timm backbone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from cvtransfer.errors import ConfigError
from cvtransfer.models.backbones import Backbone, torchvision_layer_groups

STRIDES = (2, 4, 8, 16, 32)
PROBE_SIZE = 128  # input side of the one forward pass that finds the stages (inception_v3 needs >= 75)


def has_feature_maps(module: Any) -> bool:
    """Whether ``module`` gives maps through :func:`intermediates` (a timm model or a torchvision trunk)."""
    return hasattr(module, "feature_info") and (hasattr(module, "forward_intermediates")
                                                or isinstance(module, GraphModule))


def feature_info(module: Any) -> list[dict[str, Any]]:
    """One dict per available map, shallowest first: ``num_chs`` (channels) and ``reduction`` (stride)."""
    info = module.feature_info
    return info.get_dicts() if hasattr(info, "get_dicts") else list(info)


def intermediates(module: Any, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
    """The maps ``indices`` (positions in :func:`feature_info`) of ``module`` for the batch ``x``."""
    if hasattr(module, "forward_intermediates"):
        return list(module.forward_intermediates(x, indices=indices, intermediates_only=True))
    maps = module(x)
    return [maps[str(i)] for i in indices]


def torchvision_trunk(backbone: Backbone) -> Backbone:
    """``backbone`` (a torchvision CNN) as a trunk returning its last map at each stride 2..32 as {"0": ...}.

    The stages are found by one forward pass with hooks (the last module to finish at each stride), then cut
    out by torchvision's ``create_feature_extractor``; layers after the deepest map (pooling, classifier) are
    dropped and the layer groups keep only the parameters the trunk still has.
    """
    if backbone.source != "torchvision" or has_feature_maps(backbone.module):
        return backbone
    from torchvision.models.feature_extraction import create_feature_extractor

    module = backbone.module
    stages = _stages(module, backbone.name)
    try:
        trunk = create_feature_extractor(module, return_nodes={name: str(i) for i, (name, _, _) in enumerate(stages)})
    except Exception as err:  # FX tracing fails in many ways; the user needs one line
        raise ConfigError(f"--backbone {backbone.name} cannot be traced for its feature maps ({type(err).__name__}): "
                          "pick a timm backbone or a torchvision CNN such as tv/resnet18") from None
    trunk.feature_info = [{"num_chs": channels, "reduction": stride, "module": name}
                          for name, stride, channels in stages]
    trunk.train(module.training)
    owned = {name for name, _ in trunk.named_parameters()}
    groups = [[name for name in group if name in owned] for group in torchvision_layer_groups(module)]
    return dataclasses.replace(backbone, module=trunk, layer_groups=[group for group in groups if group])


def _stages(module: nn.Module, name: str) -> list[tuple[str, int, int]]:
    """(module name, stride, channels) of the last stage to output an NCHW map at each stride 2..32."""
    last: dict[int, tuple[str, int]] = {}
    hooks = []

    def record(qualified: str) -> Any:
        def hook(_: nn.Module, __: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                for stride in STRIDES:
                    if output.shape[-2:] == (PROBE_SIZE // stride, PROBE_SIZE // stride):
                        last[stride] = (qualified, int(output.shape[1]))
        return hook

    for qualified, child in module.named_modules():
        # the network's stages: its children and theirs (resnet's layer1, efficientnet's features.3), not the
        # layers inside a block (an expansion conv would end a stride with a block's inner width)
        if qualified and qualified.count(".") <= 1:
            hooks.append(child.register_forward_hook(record(qualified)))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE))
    except Exception as err:  # any failure of the probe means: not a CNN of maps
        raise ConfigError(f"--backbone {name} cannot give feature maps ({type(err).__name__} at "
                          f"{PROBE_SIZE} px): pick a timm backbone or a torchvision CNN such as tv/resnet18") from None
    finally:
        for hook in hooks:
            hook.remove()
        module.train(was_training)
    if 32 not in last:
        raise ConfigError(f"--backbone {name} gives no NCHW feature map at stride 32 of a {PROBE_SIZE}-px input "
                          "(torchvision's ViT and Inception do not): use a timm backbone (vit_tiny_patch16_224, "
                          "inception_v3) or another torchvision CNN")
    return [(last[stride][0], stride, last[stride][1]) for stride in STRIDES if stride in last]
