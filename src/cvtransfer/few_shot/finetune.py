"""Fine-tuning on the support images themselves (``--fewshot-methods finetune_last``): the strong baseline of
Chen et al. (2019) and Dhillon et al. (2020) when the head alone is not enough.

Per episode, a copy of the model trains its last layer group (the backbone's last stage) and a new head on
the support images, the earlier groups frozen and BatchNorm on its running statistics (a handful of images
give no usable batch statistics), then classifies the queries. The head is a cosine classifier (baseline++'s,
scale 10) started from the normalised prototypes, so step 0 is ``protonet_cosine``; a linear head started
from the prototypes (fo-Proto-MAML's) scores ImageNet features so far apart that the support loss is ~0 and
nothing trains (measured: 1-shot accuracy unchanged). It costs a backbone forward and backward per step per
episode: use few episodes on a CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from cvtransfer.few_shot.methods import prototypes
from cvtransfer.models.transfer_model import TransferModel

# (support sample indices, their episode labels, query sample indices, ways) -> query scores
EpisodeTuner = Callable[[np.ndarray, torch.Tensor, np.ndarray, int], torch.Tensor]
STEPS, LR, SCALE = 50, 5e-4, 10.0


class CosineHead(nn.Module):
    """``scale`` x the cosine similarity of the feature to each class's weight."""

    def __init__(self, weight: torch.Tensor, scale: float = SCALE) -> None:
        super().__init__()
        self.weight = nn.Parameter(F.normalize(weight, dim=1).clone())
        self.scale = scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).T


def last_stage_tuner(model: TransferModel, images: Dataset, device: torch.device, steps: int = STEPS,
                     lr: float = LR) -> EpisodeTuner:
    """Fine-tune a copy of ``model``'s last layer group and a cosine head per episode on the support
    images (``images[i][0]``), Adam at ``lr`` for ``steps`` full-batch steps; the queries' scores."""

    def batch(indices: np.ndarray) -> torch.Tensor:
        return torch.stack([images[int(i)][0] for i in indices]).to(device)

    def tune(support: np.ndarray, labels: torch.Tensor, query: np.ndarray, ways: int) -> torch.Tensor:
        network = copy.deepcopy(model).to(device).eval()  # eval: BatchNorm and dropout as at inference
        network.set_frozen_groups(range(network.num_groups - 1), requires_grad=False)
        network.eval()
        x_support, labels = batch(support), labels.to(device)
        with torch.no_grad():
            centres = prototypes(network.embed(x_support).float(), labels, ways)
        network.head = CosineHead(centres).to(device)  # type: ignore[assignment]  # any module maps features
        trainable = [param for param in network.parameters() if param.requires_grad]
        optimiser = torch.optim.Adam(trainable, lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                optimiser.zero_grad()
                F.cross_entropy(network(x_support), labels).backward()
                optimiser.step()
        with torch.no_grad():
            return network(batch(query)).float().cpu()

    return tune
