"""L2-SP's penalty: stay close to the starting (pretrained) weights while fine-tuning everything.

Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional
Networks", ICML 2018:

    Omega(w) = alpha/2 * ||w_S - w_S^0||^2 + beta/2 * ||w_head||^2

where ``w_S`` are the backbone weights, ``w_S^0`` their starting values and ``w_head`` the new
classifier. ``--strategy l2sp`` adds this term (and turns weight decay off, which it replaces);
``--loss l2sp`` adds it to another strategy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from cvtransfer.losses.base import LOSSES, LossBatch, LossTerm
from cvtransfer.options import STRATEGY, opt

if TYPE_CHECKING:
    from cvtransfer.config import Config
    from cvtransfer.models.transfer_model import TransferModel


@dataclass
class L2SPOptions:
    """The two weights of Omega."""

    l2sp_alpha: float = opt(0.1, "l2sp: weight of alpha/2 ||w - w0||^2 on backbone weights.", STRATEGY, 0.0)
    l2sp_beta: float = opt(0.01, "l2sp: weight of beta/2 ||w_head||^2.", STRATEGY, 0.0)


@LOSSES.register("l2sp")
class L2SPPenalty(LossTerm):
    """Holds the starting weights as buffers (so a resumed run keeps the true w0) and computes Omega."""

    name = "l2sp"
    log_name = "penalty"  # history.csv's train_penalty
    options = L2SPOptions

    def __init__(self, model: TransferModel, alpha: float, beta: float) -> None:
        super().__init__()
        self._model = [model]  # a plain list: the model is not a submodule of its penalty
        self.alpha = alpha
        self.beta = beta
        self._names = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
        for name in self._names:
            self.register_buffer(self._buffer_name(name), model.backbone.get_parameter(name).detach().clone())

    @classmethod
    def build(cls, model: TransferModel, config: Config) -> L2SPPenalty:
        return cls(model, config.l2sp_alpha, config.l2sp_beta)

    @staticmethod
    def _buffer_name(name: str) -> str:
        return "w0__" + name.replace(".", "__")

    def penalty(self) -> torch.Tensor:
        """Omega of the model's current weights."""
        model = self._model[0]
        drift = sum(
            (model.backbone.get_parameter(name) - getattr(self, self._buffer_name(name))).pow(2).sum()
            for name in self._names
        )
        # the new layers' weights (a classifier's matrix; a decoder's or a detector's kernels), not their biases
        head = sum(weight.pow(2).sum() for weight in model.head.parameters() if weight.ndim > 1)
        penalty: torch.Tensor = self.alpha / 2 * drift + self.beta / 2 * head
        return penalty

    def forward(self, batch: LossBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.penalty(), {}
