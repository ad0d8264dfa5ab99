"""How BatchNorm normalises a few-shot episode's images (``--bn-stats``).

- ``eval`` (the default): the running statistics of training, so each image's feature depends on that
  image alone (inductive, and the features can be cached);
- ``transductive``: the statistics of the episode's own images, support and queries together, as
  MAML's and early ProtoNet code's evaluation did. The queries then shape each other's features, so
  results are not comparable with inductive ones; it is only ever used when asked, and recorded.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

BN_STATS = ("eval", "transductive")
EpisodeFeatures = Callable[[np.ndarray], torch.Tensor]  # sample indices -> their features (one row each)


def with_batch_statistics(network: nn.Module) -> nn.Module:
    """A copy of ``network`` in eval mode whose BatchNorm layers normalise by each batch's own statistics and
    hold no running statistics (so nothing of the original changes)."""
    network = copy.deepcopy(network).eval()
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    return network


def transductive_features(network: nn.Module, images: Dataset, device: torch.device) -> EpisodeFeatures:
    """The features of one episode's images (``images[i][0]`` each), computed together by
    :func:`with_batch_statistics` of ``network``."""
    episodic = with_batch_statistics(network).to(device)

    def features(indices: np.ndarray) -> torch.Tensor:
        batch = torch.stack([images[int(i)][0] for i in indices]).to(device)
        with torch.no_grad():
            return episodic(batch).float().cpu()

    return features


def held_features(features: torch.Tensor) -> EpisodeFeatures:
    """Rows of features computed once (eval statistics, from the cache)."""
    return lambda indices: features[torch.from_numpy(np.asarray(indices))]
