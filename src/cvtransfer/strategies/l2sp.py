"""L2-SP: fine-tune everything while staying close to the starting (pretrained) weights.

Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional
Networks", ICML 2018:

    Omega(w) = alpha/2 * ||w_S - w_S^0||^2 + beta/2 * ||w_head||^2

where ``w_S`` are the backbone weights, ``w_S^0`` their starting values and ``w_head`` the new
classifier. The penalty replaces weight decay (groups get ``weight_decay=0``).
"""

from __future__ import annotations

import torch
from torch import nn

from cvtransfer.models.transfer_model import TransferModel
from cvtransfer.strategies.base import STRATEGIES, Strategy, layerwise_param_groups


class L2SPPenalty(nn.Module):
    """Holds the starting weights as buffers (so a resumed run keeps the true w0) and computes Omega."""

    def __init__(self, model: TransferModel, alpha: float, beta: float) -> None:
        super().__init__()
        self._model = [model]  # a plain list: the model is not a submodule of its penalty
        self.alpha = alpha
        self.beta = beta
        self._names = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
        for name in self._names:
            self.register_buffer(self._buffer_name(name), model.backbone.get_parameter(name).detach().clone())

    @staticmethod
    def _buffer_name(name: str) -> str:
        return "w0__" + name.replace(".", "__")

    def forward(self) -> torch.Tensor:
        model = self._model[0]
        drift = sum(
            (model.backbone.get_parameter(name) - getattr(self, self._buffer_name(name))).pow(2).sum()
            for name in self._names
        )
        head = model.head.weight.pow(2).sum()
        return self.alpha / 2 * drift + self.beta / 2 * head


@STRATEGIES.register("l2sp")
class L2SP(Strategy):
    """Full fine-tuning regularised towards the starting weights."""

    name = "l2sp"

    def param_groups(self) -> list[dict]:
        return layerwise_param_groups(self.model, self.config, weight_decay=0.0)

    def regularizer(self) -> nn.Module:
        return L2SPPenalty(self.model, self.config.l2sp_alpha, self.config.l2sp_beta)
