"""MCC: minimum class confusion on the target predictions.

Jin, Wang, Long & Wang, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020.
With temperature-scaled target predictions Y = softmax(logits / T) (n, C) and certainty weights
w_i = n (1 + exp(-H(Y_i))) / sum_j (1 + exp(-H(Y_j))) (W = diag(w)):

    C = Y^T W Y,   C~_jk = C_jk / sum_k' C_jk',   L_MCC = (1 / C) * sum_{j != k} C~_jk

i.e. how often the classifier confuses class j with class k on the target batch. It needs no
discriminator, uses only target logits, and can be added to any other method (``--mcc``).
"""

from __future__ import annotations

import torch

from cvtransfer.losses.base import LOSSES, DomainLoss
from cvtransfer.losses.cdan import entropy

DEFAULT_TEMPERATURE = 2.5  # the paper's and TLlib's default


def class_confusion(logits: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """L_MCC of a batch of ``logits`` (module docstring)."""
    n, num_classes = logits.shape
    probs = (logits / temperature).softmax(dim=1)
    weights = 1.0 + torch.exp(-entropy(probs).detach())
    weights = n * weights / weights.sum()
    confusion = (probs * weights.unsqueeze(1)).T @ probs
    confusion = confusion / confusion.sum(dim=1, keepdim=True)
    return (confusion.sum() - confusion.trace()) / num_classes


@LOSSES.register("mcc")
class MinimumClassConfusionLoss(DomainLoss):
    """Minimum class confusion on the target logits."""

    name = "mcc"

    def __init__(self, temperature: float = DEFAULT_TEMPERATURE) -> None:
        super().__init__()
        self.temperature = temperature

    def compare(self, source_features: torch.Tensor, target_features: torch.Tensor, source_logits: torch.Tensor,
                target_logits: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return class_confusion(target_logits, self.temperature), {}
