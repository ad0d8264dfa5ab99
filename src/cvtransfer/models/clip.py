"""CLIP image-text models through open_clip: the image tower as a backbone, the text tower as a zero-shot head.

``--backbone clip:NAME`` is open_clip's model NAME (``clip:ViT-B-32``, any of ``open_clip.list_models()``, or
``clip:FILE.json``, a model config of one's own). Its backbone is the image tower with L2-normalised output,
so that a zero-shot head is a plain linear layer: ``logit_scale * text_embeddings`` (no bias) over the
normalised image feature is CLIP's cosine similarity times its learned temperature, and every strategy,
the feature cache, few-shot methods and the run folder work on CLIP features unchanged.

Weights (``--weights``): ``none`` (random initialisation), a file (an open_clip checkpoint; or a cvtransfer
run folder or model file for the image tower), or one of open_clip's pretrained tags for NAME (``openai``,
``laion2b_s34b_b79k``, ...), downloaded by open_clip; offline and not cached, a one-line error says how to
pass a file instead.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cvtransfer.data.transforms import Preprocessing
from cvtransfer.errors import ConfigError, WeightsError

CLIP_PREFIX = "clip:"
TINY_CLIP = "cvt-tiny-clip"  # a small image-text model of this package (tests, the digits benchmark)
TINY_CONFIG = {"embed_dim": 64,
               "vision_cfg": {"image_size": 32, "layers": 3, "width": 96, "patch_size": 4, "head_width": 32},
               "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def is_clip(name: str) -> bool:
    """Whether backbone ``name`` is an open_clip model (``clip:NAME``)."""
    return name.startswith(CLIP_PREFIX)


def clip_arch(name: str) -> str:
    """open_clip's model name of backbone ``clip:NAME``; a ``.json`` config file (or the package's tiny model)
    is registered with open_clip first. An unknown name is a one-line error."""
    import open_clip

    arch = name[len(CLIP_PREFIX):] if is_clip(name) else name
    if arch == TINY_CLIP and TINY_CLIP not in open_clip.list_models():
        open_clip.factory._MODEL_CONFIGS[TINY_CLIP] = TINY_CONFIG  # no file: the config lives in this module
    if arch.endswith(".json"):
        path = Path(arch)
        if not path.is_file():
            raise ConfigError(f"--backbone {name}: {path} does not exist; give an open_clip model config (.json) "
                              "or a name of open_clip.list_models()")
        open_clip.add_model_config(path)
        arch = path.stem
    if arch not in open_clip.list_models():
        from cvtransfer.errors import unknown_name

        raise unknown_name("CLIP model", arch, open_clip.list_models())
    return arch


class ClipImageEncoder(nn.Module):
    """open_clip's image tower with L2-normalised output (the backbone of ``clip:NAME``)."""

    def __init__(self, visual: nn.Module, output_dim: int) -> None:
        super().__init__()
        self.visual = visual
        self.num_features = output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(x), dim=-1)


@dataclass
class ClipModel:
    """A whole open_clip model, its tokenizer, its name and where its weights came from."""

    model: Any  # open_clip.CLIP: encode_image, encode_text, logit_scale, visual
    tokenizer: Any
    arch: str
    weights_source: str  # "none", "file:<path>" or "open_clip:<tag>"

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())


def create_clip(name: str, weights: str = "none", image_size: int | None = None) -> ClipModel:
    """open_clip's model ``name`` (``clip:NAME`` or NAME) with ``weights``: none, an open_clip checkpoint file,
    or a pretrained tag (downloaded by open_clip: :func:`cvtransfer.models.backbones.create_clip_model` first
    fails at once when offline); ``image_size``: build the image tower for that size (open_clip resamples
    pretrained position embeddings)."""
    import open_clip

    arch = clip_arch(name)
    tag = pretrained_tag(arch, weights)
    source, pretrained = (f"open_clip:{tag}", tag) if tag else ("none", None) if weights == "none" else \
        (f"file:{weights}", str(weights))
    quiet = _Without("No pretrained weights loaded")  # open_clip's warning for a random init asked for
    logging.getLogger().addFilter(quiet)
    try:
        model = open_clip.create_model(arch, pretrained=pretrained, weights_only=True, force_image_size=image_size)
    except (RuntimeError, KeyError, ValueError) as err:
        raise WeightsError(f"--weights {weights} does not load into {arch}: {str(err).splitlines()[0][:200]}") from None
    finally:
        logging.getLogger().removeFilter(quiet)
    return ClipModel(model.eval(), open_clip.get_tokenizer(arch), arch, source)


def pretrained_tag(arch: str, weights: str) -> str | None:
    """``weights`` when it names one of open_clip's pretrained tags of ``arch``; None for none or a file; a
    one-line error for anything else."""
    import open_clip

    if weights == "imagenet":
        raise ConfigError(f"--weights imagenet does not apply to --backbone {CLIP_PREFIX}{arch}: give one of open_clip's "
                          f"tags ({', '.join(open_clip.list_pretrained_tags_by_model(arch)[:4]) or 'none here'}), "
                          "a checkpoint file, or none")
    if weights == "none" or Path(weights).is_file():
        return None
    if Path(weights).exists() or "/" in weights or "." in weights:
        raise WeightsError(f"--weights {weights} is not a file of CLIP weights: pass an open_clip checkpoint file")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if weights not in tags:
        raise ConfigError(f"--weights {weights} is not an open_clip tag of {arch}: give one of "
                          f"{', '.join(tags[:8]) or '(none: this model has no published weights)'}, a file, or none")
    return weights


class _Without(logging.Filter):
    """Drops the log records that start with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def clip_preprocessing(visual: nn.Module) -> Preprocessing:
    """The image tower's own preprocessing (size, mean, std, interpolation; CLIP resizes the shortest side to the
    input size and crops the centre: crop_pct 1)."""
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", getattr(visual, "image_size", 224))
    size = size[0] if isinstance(size, (tuple, list)) else size
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return Preprocessing(input_size=int(size), mean=tuple(cfg.get("mean", OPENAI_DATASET_MEAN)),
                         std=tuple(cfg.get("std", OPENAI_DATASET_STD)),
                         interpolation=str(cfg.get("interpolation", "bicubic")), crop_pct=1.0)


def clip_layer_groups(encoder: nn.Module) -> list[list[str]]:
    """Parameter names per group, stem first: the parameters before the first block, each block (a ViT's
    ``resblocks.N``, a ResNet's ``layerN``, a timm trunk's ``blocks.N``/``stages.N``), then the rest."""
    groups: dict[str, list[str]] = {}
    in_blocks = False
    for name, _ in encoder.named_parameters():
        found = re.search(r"(resblocks|blocks|stages)\.(\d+)|(layer\d+)", name)
        in_blocks = in_blocks or found is not None
        groups.setdefault(found.group(0) if found else "tail" if in_blocks else "stem", []).append(name)
    return list(groups.values())


def text_embeddings(clip: ClipModel, class_names: list[str], templates: list[str]) -> torch.Tensor:
    """One row per class: the normalised text embeddings of every template filled with the class's name,
    averaged, then normalised again (open_clip's ``build_zero_shot_classifier``, as CLIP's paper does)."""
    import open_clip

    with torch.no_grad():
        return open_clip.build_zero_shot_classifier(clip.model, clip.tokenizer, class_names, templates,
                                                    num_classes_per_batch=10).T.contiguous()
