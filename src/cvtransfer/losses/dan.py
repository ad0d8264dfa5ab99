"""DAN: align the domains by minimising a multi-kernel maximum mean discrepancy (MK-MMD).

Long, Cao, Wang & Jordan, "Learning Transferable Features with Deep Adaptation Networks",
ICML 2015. With Gaussian kernels k_u(x, y) = exp(-||x - y||^2 / (2 sigma_u^2)):

    MMD^2(S, T) = E[k(s, s')] + E[k(t, t')] - 2 E[k(s, t)],   k = sum_u k_u

on the bottleneck features of a source batch S and a target batch T (the biased estimate, a
squared RKHS norm: never negative, exactly 0 for identical batches). The bandwidths are
``sigma_u^2 = alpha_u * mean squared distance`` in the joint batch with
``alpha_u in {2^-3, ..., 2^1}`` and equal kernel weights, as in TLlib's
``MultipleKernelMaximumMeanDiscrepancy`` (the paper learns the weights; fixed weights work as well
in practice and keep the loss a plain minimisation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cvtransfer.losses.base import LOSSES, DomainLoss

DEFAULT_ALPHAS = (0.125, 0.25, 0.5, 1.0, 2.0)


def gaussian_mmd2(x: torch.Tensor, y: torch.Tensor, sigmas2: Sequence[float] | torch.Tensor,
                  unbiased: bool = False) -> torch.Tensor:
    """MMD^2 between samples ``x`` (m, d) and ``y`` (n, d) under the sum of Gaussian kernels of variances ``sigmas2``.

    ``unbiased`` drops the i == j terms within each sample (Gretton et al. 2012, MMD^2_u; may be
    slightly negative when the distributions are equal).
    """
    joint = torch.cat([x, y])
    distances = torch.cdist(joint, joint).pow(2)
    sigmas2 = torch.as_tensor(sigmas2, dtype=joint.dtype, device=joint.device).view(-1, 1, 1)
    kernel = torch.exp(-distances.unsqueeze(0) / (2 * sigmas2)).sum(0)
    m = len(x)
    k_xx, k_yy, k_xy = kernel[:m, :m], kernel[m:, m:], kernel[:m, m:]
    if not unbiased:
        return k_xx.mean() + k_yy.mean() - 2 * k_xy.mean()
    n = len(y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / max(1, m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / max(1, n * (n - 1))
    return within_x + within_y - 2 * k_xy.mean()


class MultipleKernelMaximumMeanDiscrepancy(DomainLoss):
    """MK-MMD between source and target features (module docstring for the formula)."""

    name = "dan"

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS) -> None:
        super().__init__()
        self.alphas = tuple(alphas)

    def compare(self, source_features: torch.Tensor, target_features: torch.Tensor, source_logits: torch.Tensor,
                target_logits: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            joint = torch.cat([source_features, target_features])
            mean_distance = torch.cdist(joint, joint).pow(2).mean().clamp(min=1e-8)
        sigmas2 = mean_distance * torch.tensor(self.alphas, device=joint.device)
        return gaussian_mmd2(source_features, target_features, sigmas2), {}


LOSSES.register("dan")(MultipleKernelMaximumMeanDiscrepancy)
