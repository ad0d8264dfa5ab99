"""``cvtransfer zeroshot DATA_DIR --backbone clip:NAME --weights W``: classify images from their class names alone.

Each class name (the folder's, or ``--classes``) fills every prompt template (``--templates FILE``, default
CLIP's 7-template ensemble); the text embeddings are normalised, averaged over the templates and normalised
again (open_clip's ``build_zero_shot_classifier``). Times CLIP's logit scale, they are the rows of a linear
head over the image tower's normalised features: the zero-shot classifier is an ordinary cvtransfer model.

The command writes a run folder like ``fit``'s (model.safetensors: image tower + zero-shot head; splits.json
with the evaluated images as the test split; metrics.json, confusion.png, report.html; zeroshot.json with the
prompts), so ``evaluate``, ``predict``, ``report`` and ``fit --weights RUN`` (fine-tuning from the zero-shot
head) work on it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cvtransfer.data.folders import DatasetSplits, discover
from cvtransfer.errors import ConfigError
from cvtransfer.io import write_json
from cvtransfer.models.backbones import clip_backbone, create_clip_model
from cvtransfer.models.clip import ClipModel, is_clip, text_embeddings
from cvtransfer.models.transfer_model import TransferModel
from cvtransfer.run import ZEROSHOT_FILE, Run, export_model

if TYPE_CHECKING:
    from cvtransfer.config import Config

log = logging.getLogger(__name__)

# CLIP's "simple" ImageNet ensemble (Radford et al. 2021), open_clip's SIMPLE_IMAGENET_TEMPLATES (a test checks)
DEFAULT_TEMPLATES = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
                     "a {} in a video game.", "art of the {}.", "a photo of the small {}.")


def read_templates(path: str) -> list[str]:
    """The templates of --templates FILE (one a line, each with {} for the class name), else the default ensemble."""
    if not path:
        return list(DEFAULT_TEMPLATES)
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--templates {file} does not exist: give a text file of prompts, one a line with {{}}")
    templates = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    bad = [line for line in templates if line.count("{}") != 1]
    if not templates or bad:
        raise ConfigError(f"--templates {file}: {'no template' if not templates else repr(bad[0])}: every line needs "
                          "one {} where the class name goes, e.g. 'a photo of a {}.'")
    return templates


def prompt_names(classes: list[str], given: str) -> list[str]:
    """What the prompts call each class: --classes (comma-separated, in the classes' order), else the folder
    names with _ and - read as spaces."""
    if not given:
        return [name.replace("_", " ").replace("-", " ") for name in classes]
    names = [part.strip() for part in given.split(",")]
    if len(names) != len(classes) or not all(names):
        raise ConfigError(f"--classes gives {len(names)} names for {len(classes)} classes ({', '.join(classes[:5])}"
                          f"{', ...' if len(classes) > 5 else ''}): give one name per class folder, in that order")
    return names


def zero_shot_head(clip: ClipModel, names: list[str], templates: list[str]) -> torch.Tensor:
    """The zero-shot head's weight (classes x D): the ensembled text embeddings times CLIP's logit scale."""
    return clip.logit_scale * text_embeddings(clip, names, templates)


def zero_shot_model(clip: ClipModel, names: list[str], templates: list[str]) -> TransferModel:
    """CLIP's image tower with the zero-shot head (no bias) of ``names``."""
    backbone = clip_backbone(clip)
    model = TransferModel(backbone.module, backbone.num_features, len(names), backbone.layer_groups)
    with torch.no_grad():
        model.head.weight.copy_(zero_shot_head(clip, names, templates))
        model.head.bias.zero_()
    return model.eval()


def zeroshot(config: Config) -> Run:
    """Classify DATA_DIR's images (its test split, else all of them) zero-shot; a run folder (``--out``, default
    runs/zeroshot-<model>-<time>) with metrics.json, report.html and the model."""
    from cvtransfer.engine.commands import new_run_folder

    if not is_clip(config.backbone):
        raise ConfigError(f"zeroshot needs an image-text model: --backbone clip:NAME (e.g. clip:ViT-B-32), not "
                          f"{config.backbone}")
    if config.data is None:
        raise ConfigError("no data given: pass DATA_DIR (class folders; the folder names are the class names)")
    templates = read_templates(config.templates)
    found = discover(config.data, val_split=0.0, require_val=False, max_pixels=config.max_image_pixels)
    samples = found.test or found.train + found.val
    names = prompt_names(found.classes, config.classes)
    with torch.random.fork_rng(devices=[]):  # --weights none: the same random init for the same --seed
        torch.manual_seed(config.seed)
        clip = create_clip_model(config.backbone, config.weights, config.image_size)
    model = zero_shot_model(clip, names, templates)
    preprocessing = clip_backbone(clip).preprocessing.with_size(config.image_size)
    default = Path("runs") / f"zeroshot-{clip.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    with new_run_folder(config, default) as (config, run_dir):
        write_json(run_dir / "splits.json", DatasetSplits(found.classes, [], [], samples, found.skipped).to_dict())
        write_json(run_dir / ZEROSHOT_FILE, {"model": clip.arch, "weights": clip.weights_source,
                                             "logit_scale": clip.logit_scale, "templates": templates,
                                             "prompts": dict(zip(found.classes, names))})
        export_model(run_dir, config, found.classes, model, preprocessing)
        run = Run(run_dir)
        metrics = run.evaluate()
        log.info("%s", run.task.summary(metrics))
        if config.report:
            from cvtransfer.report import write_report_safely

            write_report_safely(run_dir)
    return Run(run_dir)
