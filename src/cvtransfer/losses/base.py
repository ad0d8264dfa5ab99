"""What a loss term is: anything added to the task loss, computed from one batch context.

Every term is a :class:`LossTerm` registered by name in ``LOSSES``. The one engine computes the
task loss on the labelled batch, then asks each term of the run for ``(loss, metrics)`` from a
:class:`LossBatch` (features and logits of the labelled batch, those of a second stream when the
run has one, the training progress) and adds ``weight * loss``:

    loss = task_loss(logits, labels) + sum_k weight_k * L_k(batch)

Terms that compare two streams (domain adaptation: dan, coral, dann, cdan, cdan+e, adda, mcc, jan) are
:class:`DomainLoss` subclasses, marked ``needs_target``; the runner then draws source + target
pairs. Terms that need the model (L2-SP's distance to the starting weights) take it in
:meth:`LossTerm.build`. Small modules a term needs (a domain discriminator) live inside it, so they
are saved in checkpoints and their parameters join the optimizer. A term with settings declares them
as an ``options`` dataclass (see ``cvtransfer.options``): adding a term is one file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from cvtransfer.errors import ConfigError
from cvtransfer.registry import Registry

if TYPE_CHECKING:
    from cvtransfer.config import Config
    from cvtransfer.models.transfer_model import TransferModel

LOSSES: Registry[type[LossTerm]] = Registry("loss term")


@dataclass
class LossBatch:
    """What one training step computed, for the loss terms to read."""

    features: torch.Tensor  # the labelled batch's features (what the head reads)
    logits: torch.Tensor
    labels: torch.Tensor
    progress: float  # fraction of the training steps done, in [0, 1]
    target_features: torch.Tensor | None = None  # the second stream's (unlabelled target), when there is one
    target_logits: torch.Tensor | None = None


class LossTerm(nn.Module):
    """Base of every loss term. Subclasses implement :meth:`forward` and register in ``LOSSES``."""

    name: ClassVar[str] = ""
    metric_names: ClassVar[tuple[str, ...]] = ()  # keys of the metrics dict forward returns
    needs_target: ClassVar[bool] = False  # reads a second stream: the runner draws source + target pairs
    source_stage: ClassVar[bool] = False  # a source-only stage must train the model first (ADDA)
    log_name: ClassVar[str | None] = None  # history column train_<log_name>; default train_<key>_loss
    options: ClassVar[type | None] = None  # a dataclass of opt() fields: this term's settings

    @classmethod
    def build(cls, model: TransferModel, config: Config) -> LossTerm:
        """The term for ``model`` (its ``features_dim`` and ``num_classes``) and ``config``."""
        return cls()

    def attach(self, model: TransferModel) -> None:
        """Called once with the model before the optimizer is built (ADDA freezes parts of it here)."""

    def features(self, model: TransferModel, source: torch.Tensor, target: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of both batches: one forward of the concatenated batch, so BatchNorm sees both domains."""
        joint = model.embed(torch.cat([source, target]))
        return joint[: len(source)], joint[len(source):]

    def forward(self, batch: LossBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError


class DomainLoss(LossTerm):
    """A term comparing the labelled (source) batch with the unlabelled target batch.

    Subclasses implement :meth:`compare` on both streams' features and logits.
    """

    needs_target = True

    def forward(self, batch: LossBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if batch.target_features is None or batch.target_logits is None:
            raise ConfigError(f"the loss term {self.name} needs unlabelled target images: use cvtransfer adapt "
                              "with --target")
        return self.compare(batch.features, batch.target_features, batch.logits, batch.target_logits,
                            batch.progress)

    def compare(self, source_features: torch.Tensor, target_features: torch.Tensor, source_logits: torch.Tensor,
                target_logits: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError


@LOSSES.register("source-only")
class SourceOnly(DomainLoss):
    """No adaptation: the baseline trained on source labels only (its target images are only looked at)."""

    name = "source-only"

    def compare(self, source_features: torch.Tensor, target_features: torch.Tensor, source_logits: torch.Tensor,
                target_logits: torch.Tensor, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return source_features.new_zeros(()), {}


def adaptation_methods() -> list[str]:
    """The names ``--method`` takes: the terms that compare source and target."""
    return [name for name, term in LOSSES.items() if term.needs_target]


def addable(name: str) -> bool:
    """Whether term ``name`` can be added with ``--loss``: not a whole method of its own (a source stage,
    its own encoders or frozen parts, as ADDA has; or source-only, which adds nothing)."""
    term = LOSSES.get(name)
    return name != "source-only" and not term.source_stage and term.attach is LossTerm.attach \
        and term.features is LossTerm.features


def parse_loss_spec(spec: str) -> list[tuple[str, float]]:
    """``"dann,mcc:0.1"`` (``--loss dann --loss mcc:0.1``) as [(name, weight)]; the weight defaults to 1."""
    terms = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, weight = item.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ConfigError(f"--loss {item}: the weight after ':' must be a number, e.g. --loss {name}:0.1") from None
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"--loss {item}: the weight must be a finite number >= 0")
        LOSSES.get(name)
        terms.append((name, value))
    return terms


class LossTerms(nn.Module):
    """The terms of a run, each with its weight, summed; keys name them in the history."""

    def __init__(self, terms: dict[str, LossTerm], weights: dict[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)

    def __len__(self) -> int:
        return len(self.terms)

    def items(self) -> list[tuple[str, LossTerm]]:
        """(key, term) pairs in order."""
        return [(key, term) for key, term in self.terms.items() if isinstance(term, LossTerm)]

    @property
    def needs_target(self) -> bool:
        return any(term.needs_target for _, term in self.items())

    @property
    def metric_names(self) -> list[str]:
        """Everything :meth:`forward` reports: each term's loss and its metrics."""
        names = []
        for key, term in self.items():
            names += [term.log_name or f"{key}_loss", *term.metric_names]
        return names

    def attach(self, model: TransferModel) -> None:
        for _, term in self.items():
            term.attach(model)

    def features(self, model: TransferModel, source: torch.Tensor, target: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both batches' features, as the first term that reads the target computes them (ADDA: two encoders)."""
        first = next((term for _, term in self.items() if term.needs_target), None)
        return (first or LossTerm()).features(model, source, target)

    def forward(self, batch: LossBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = batch.features.new_zeros(())
        metrics: dict[str, torch.Tensor] = {}
        for key, term in self.items():
            loss, extra = term(batch)
            total = total + self.weights[key] * loss
            metrics[term.log_name or f"{key}_loss"] = loss.detach()
            metrics.update({name: value.detach() for name, value in extra.items()})
        return total, metrics

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """One optimizer group for the trainable parameters of the terms (discriminators)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"name": "adaptation", "params": params, "lr": lr, "weight_decay": weight_decay}] if params else []


def build_loss_terms(config: Config, model: TransferModel, strategy_terms: Sequence[tuple[str, float]] = (),
                     paired: bool = False) -> LossTerms:
    """The run's terms: adapt's ``--method`` (weight ``--trade-off``) and ``--mcc``, the strategy's, ``--loss``.

    ``paired``: the run draws source + target batches (adapt); without them a term that reads the
    target is refused in one line.
    """
    specs: list[tuple[str, str, float]] = []
    if paired:
        specs.append(("transfer", config.method, config.trade_off))
        if config.mcc > 0:
            if config.method == "mcc":
                raise ConfigError("--mcc adds minimum class confusion to another method; with --method mcc set "
                                  "its weight with --trade-off instead")
            specs.append(("mcc", "mcc", config.mcc))
    specs += [(name, name, weight) for name, weight in strategy_terms]
    specs += [(name, name, weight) for name, weight in parse_loss_spec(config.loss)]
    terms: dict[str, LossTerm] = {}
    weights: dict[str, float] = {}
    for key, name, weight in specs:
        term = LOSSES.get(name)
        if key in terms or (paired and name == config.method and key != "transfer"):
            raise ConfigError(f"the loss term {name} is asked for twice (--method, --mcc, --loss or the strategy): "
                              "give it once")
        if term.needs_target and not paired:
            raise ConfigError(f"--loss {name} compares source and target images: use cvtransfer adapt with "
                              "--target (fit has labelled images only)")
        terms[key] = term.build(model, config)
        weights[key] = weight
    return LossTerms(terms, weights)
