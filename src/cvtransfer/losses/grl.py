"""The gradient reversal layer (Ganin & Lempitsky, ICML 2015) and its warm-start coefficient.

Forward it is the identity; backward it multiplies the gradient by ``-lambda``, so a feature
extractor below it learns to *maximise* the loss of the discriminator above it while the
discriminator minimises it: one backward pass trains both sides of the minimax game.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class GradientReverseFunction(torch.autograd.Function):
    """Identity forward; gradient times ``-coeff`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coeff * grad, None


def reverse_gradient(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """``x`` unchanged, with its gradient reversed and scaled by ``coeff``."""
    reversed_: torch.Tensor = GradientReverseFunction.apply(x, coeff)
    return reversed_


def warm_start(progress: float, alpha: float = 10.0, lo: float = 0.0, hi: float = 1.0) -> float:
    """Ganin et al. (JMLR 2016) ramp: lo + (hi - lo) * (2 / (1 + exp(-alpha * p)) - 1), p in [0, 1].

    It starts at ``lo`` (the discriminator's signal is noise early on) and approaches ``hi``.
    """
    p = min(max(progress, 0.0), 1.0)
    return lo + (hi - lo) * (2.0 / (1.0 + math.exp(-alpha * p)) - 1.0)


class WarmStartGradientReverseLayer(nn.Module):
    """Gradient reversal whose coefficient follows :func:`warm_start` of the training progress."""

    def __init__(self, alpha: float = 10.0, lo: float = 0.0, hi: float = 1.0) -> None:
        super().__init__()
        self.alpha, self.lo, self.hi = alpha, lo, hi

    def coefficient(self, progress: float) -> float:
        return warm_start(progress, self.alpha, self.lo, self.hi)

    def forward(self, x: torch.Tensor, progress: float) -> torch.Tensor:
        return reverse_gradient(x, self.coefficient(progress))
