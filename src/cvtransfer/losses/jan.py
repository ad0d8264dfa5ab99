"""JAN: align the joint distribution of features and predictions (joint MMD).

Long, Zhu, Wang & Jordan, "Deep Transfer Learning with Joint Adaptation Networks", ICML 2017.
The kernel on a pair of samples is the product of a kernel on the features z (the bottleneck
output) and one on the softmax predictions g:

    k((z, g), (z', g')) = k_z(z, z') * k_g(g, g')
    JMMD^2(S, T) = E[k(s, s')] + E[k(t, t')] - 2 E[k(s, t)]

k_z is DAN's multi-kernel Gaussian (bandwidths alpha_u * mean squared distance, alpha_u in
{2^-3, ..., 2^1}); k_g is one Gaussian of fixed bandwidth ``--jan-sigma`` (0.92, TLlib's JAN).
The biased estimate is used, as in ``dan``: never negative, 0 for identical batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from cvtransfer.losses.base import LOSSES, DomainLoss
from cvtransfer.losses.dan import DEFAULT_ALPHAS
from cvtransfer.options import ADAPT, opt

if TYPE_CHECKING:
    from cvtransfer.config import Config
    from cvtransfer.models.transfer_model import TransferModel


@dataclass
class JANOptions:
    """JAN's one setting."""

    jan_sigma: float = opt(0.92, "jan: bandwidth of the Gaussian kernel on the softmax predictions.", ADAPT, 1e-6)


def joint_mmd2(source: list[torch.Tensor], target: list[torch.Tensor], sigmas2: list[torch.Tensor]) -> torch.Tensor:
    """JMMD^2 of paired layers: the kernel is the product over layers of sums of Gaussians of variances ``sigmas2[l]``."""
    kernel: torch.Tensor | None = None
    for s, t, variances in zip(source, target, sigmas2):
        joint = torch.cat([s, t])
        distances = torch.cdist(joint, joint).pow(2)
        layer = torch.exp(-distances.unsqueeze(0) / (2 * variances.view(-1, 1, 1))).sum(0)
        kernel = layer if kernel is None else kernel * layer
    assert kernel is not None, "joint_mmd2 needs at least one layer"
    m = len(source[0])
    return kernel[:m, :m].mean() + kernel[m:, m:].mean() - 2 * kernel[:m, m:].mean()


@LOSSES.register("jan")
class JointMaximumMeanDiscrepancy(DomainLoss):
    """JMMD between (features, predictions) of the source and target batches (module docstring)."""

    name = "jan"
    options = JANOptions

    def __init__(self, sigma: float = 0.92) -> None:
        super().__init__()
        self.sigma = sigma

    @classmethod
    def build(cls, model: TransferModel, config: Config) -> JointMaximumMeanDiscrepancy:
        return cls(config.jan_sigma)

    def compare(self, source_features: torch.Tensor, target_features: torch.Tensor, source_logits: torch.Tensor,
                target_logits: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            joint = torch.cat([source_features, target_features])
            mean_distance = torch.cdist(joint, joint).pow(2).mean().clamp(min=1e-8)
        feature_sigmas2 = mean_distance * torch.tensor(DEFAULT_ALPHAS, device=joint.device)
        prediction_sigma2 = torch.tensor([self.sigma ** 2], device=joint.device)
        loss = joint_mmd2([source_features, source_logits.softmax(dim=1)],
                          [target_features, target_logits.softmax(dim=1)], [feature_sigmas2, prediction_sigma2])
        return loss, {}
