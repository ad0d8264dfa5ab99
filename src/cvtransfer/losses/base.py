"""What a domain-adaptation method is: a loss on a source batch and a target batch.

Every method is a :class:`DomainLoss` registered by name in ``DA_METHODS``. The one engine
(``engine/adaptation.py``) passes a batch of source and target images through the model, adds
cross-entropy on the source labels, and adds each method's loss:

    loss = CE(source logits, source labels) + trade_off * L_method + mcc * L_mcc

A loss receives features (the bottleneck output) and logits of both domains and the training
progress ``p`` in [0, 1], and returns ``(loss, metrics)``. Small modules a method needs (a domain
discriminator) live inside the loss, so they are saved in checkpoints and their parameters join
the optimizer. Two hooks cover the methods that need more: :meth:`DomainLoss.attach` (called once
with the model before training) and :meth:`DomainLoss.features` (how features are computed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from cvtransfer.errors import ConfigError
from cvtransfer.registry import Registry

if TYPE_CHECKING:
    from cvtransfer.config import Config
    from cvtransfer.models.transfer_model import TransferModel

DA_METHODS: Registry[type[DomainLoss]] = Registry("adaptation method")


class DomainLoss(nn.Module):
    """Base of every adaptation method. Subclasses implement :meth:`forward` and register."""

    name: ClassVar[str] = ""
    metric_names: ClassVar[tuple[str, ...]] = ()  # keys of the metrics dict forward returns
    source_stage: ClassVar[bool] = False  # True: a source-only stage must train the model first (ADDA)

    @classmethod
    def build(cls, features_dim: int, num_classes: int, config: Config) -> DomainLoss:
        """The loss for features of width ``features_dim`` and ``num_classes`` classes."""
        return cls()

    def attach(self, model: TransferModel) -> None:
        """Called once with the model before the optimizer is built (ADDA freezes parts of it here)."""

    def features(self, model: TransferModel, source: torch.Tensor, target: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of both batches: one forward of the concatenated batch, so BatchNorm sees both domains."""
        joint = model.embed(torch.cat([source, target]))
        return joint[: len(source)], joint[len(source):]

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor, source_logits: torch.Tensor,
                target_logits: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError


@DA_METHODS.register("source-only")
class SourceOnly(DomainLoss):
    """No adaptation: the baseline trained on source labels only (its target images are only looked at)."""

    name = "source-only"

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor, source_logits: torch.Tensor,
                target_logits: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return source_features.new_zeros(()), {}


class DomainLosses(nn.Module):
    """The method's loss and optional extra terms (``mcc``), each with its weight, summed."""

    def __init__(self, terms: dict[str, DomainLoss], weights: dict[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)

    @property
    def main(self) -> DomainLoss:
        return next(iter(self.terms.values()))  # type: ignore[return-value]

    @property
    def metric_names(self) -> list[str]:
        """Everything :meth:`forward` reports: each term's loss and its metrics."""
        names = []
        for key, term in self.terms.items():
            names += [f"{key}_loss", *term.metric_names]
        return names

    def attach(self, model: TransferModel) -> None:
        for term in self.terms.values():
            term.attach(model)

    def features(self, model: TransferModel, source: torch.Tensor, target: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.main.features(model, source, target)

    def forward(self, source_features: torch.Tensor, target_features: torch.Tensor, source_logits: torch.Tensor,
                target_logits: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = source_features.new_zeros(())
        metrics: dict[str, torch.Tensor] = {}
        for key, term in self.terms.items():
            loss, extra = term(source_features, target_features, source_logits, target_logits, progress)
            total = total + self.weights[key] * loss
            metrics[f"{key}_loss"] = loss.detach()
            metrics.update({name: value.detach() for name, value in extra.items()})
        return total, metrics

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """One optimizer group for the trainable parameters of the losses (discriminators)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"name": "adaptation", "params": params, "lr": lr, "weight_decay": weight_decay}] if params else []


def build_domain_losses(config: Config, features_dim: int, num_classes: int) -> DomainLosses:
    """``--method`` weighted by ``--trade-off``, plus minimum class confusion when ``--mcc`` > 0."""
    method = DA_METHODS.get(config.method)
    terms: dict[str, DomainLoss] = {"transfer": method.build(features_dim, num_classes, config)}
    weights = {"transfer": config.trade_off}
    if config.mcc > 0:
        if config.method == "mcc":
            raise ConfigError("--mcc adds minimum class confusion to another method; with --method mcc set "
                              "its weight with --trade-off instead")
        terms["mcc"] = DA_METHODS.get("mcc").build(features_dim, num_classes, config)
        weights["mcc"] = config.mcc
    return DomainLosses(terms, weights)
