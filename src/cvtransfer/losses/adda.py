"""ADDA: adversarial discriminative domain adaptation with an untied target encoder.

Tzeng, Hoffman, Saenko & Darrell, "Adversarial Discriminative Domain Adaptation", CVPR 2017.
Stage 1 trains the source encoder M_s and the classifier C on source labels (in cvtransfer: a
``source-only`` run). Stage 2 starts a target encoder M_t from M_s, freezes M_s and C, and plays
the GAN game with inverted labels:

    min_D  L_D = -E_s[log D(M_s(x_s))] - E_t[log(1 - D(M_t(x_t)))]
    min_Mt L_M = -lambda_p E_t[log D(M_t(x_t))],  lambda_p = 2 / (1 + exp(-10 p)) - 1

lambda_p is the warm start TLlib's ADDA uses too (its gradient reversal ramps from 0): the
discriminator learns first, and the encoder does not chase an untrained one; without it the
MNIST->USPS target accuracy fell from 55% after stage 1 to 22%.

Both are minimised in one backward pass: L_D sees detached features, and L_M is computed through
a copy of D whose parameters are detached, so each gradient reaches only its own player. The
target encoder is the model being trained; the frozen source encoder lives inside this loss.
Target images then go through M_t and C.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from cvtransfer.losses.base import LOSSES, DomainLoss
from cvtransfer.losses.dann import DomainDiscriminator, domain_loss_and_accuracy
from cvtransfer.losses.grl import warm_start
from cvtransfer.options import ADAPT, opt

if TYPE_CHECKING:
    from cvtransfer.config import Config
    from cvtransfer.models.transfer_model import TransferModel


@dataclass
class ADDAOptions:
    """ADDA's setting: the length of its first, source-only stage."""

    source_epochs: int = opt(3, "adda: epochs of source-only training before the adversarial stage.", ADAPT, 1)


@LOSSES.register("adda")
class AdversarialDiscriminativeLoss(DomainLoss):
    """ADDA's stage-2 loss: discriminator loss plus the target encoder's inverted-label loss."""

    name = "adda"
    metric_names = ("domain_accuracy", "encoder_loss")
    source_stage = True
    options = ADDAOptions

    def __init__(self, features_dim: int, hidden: int = 1024) -> None:
        super().__init__()
        self.discriminator = DomainDiscriminator(features_dim, hidden)
        self.source_encoder: nn.Module | None = None

    @classmethod
    def build(cls, model: TransferModel, config: Config) -> AdversarialDiscriminativeLoss:
        return cls(model.features_dim, config.discriminator_dim)

    def attach(self, model: TransferModel) -> None:
        """Freeze a copy of the (source-trained) encoder here, and the classifier in the model."""
        self.source_encoder = copy.deepcopy(nn.Sequential(model.backbone, model.bottleneck))
        self.source_encoder.requires_grad_(False).eval()
        model.head.requires_grad_(False)

    def train(self, mode: bool = True) -> AdversarialDiscriminativeLoss:
        super().train(mode)
        if self.source_encoder is not None:
            self.source_encoder.eval()  # frozen, BatchNorm statistics included
        return self

    def features(self, model: TransferModel, source: torch.Tensor, target: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.source_encoder is None:
            raise RuntimeError("ADDA's loss is used before attach(model)")
        with torch.no_grad():
            source_features = self.source_encoder(source)
        return source_features, model.embed(target)

    def compare(self, source_features: torch.Tensor, target_features: torch.Tensor, source_logits: torch.Tensor,
                target_logits: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        joint = torch.cat([source_features, target_features]).detach()
        discriminator_loss, accuracy = domain_loss_and_accuracy(self.discriminator(joint), len(source_features))
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        frozen.update({name: b.clone() for name, b in self.discriminator.named_buffers()})  # stats untouched
        # The encoder's view goes through the same joint batch as the discriminator's own loss: on a
        # target-only batch the discriminator's BatchNorm would normalise the domain gap away, and the
        # encoder would "fool" a view that the real discriminator never sees.
        seen = torch.cat([source_features.detach(), target_features])
        fooled = functional_call(self.discriminator, frozen, (seen,)).view(-1)[len(source_features):]
        encoder_loss = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        return discriminator_loss + warm_start(progress) * encoder_loss, {"domain_accuracy": accuracy, "encoder_loss": encoder_loss.detach()}
