"""Partial fine-tuning: the first K layer groups (stem first) stay frozen, BatchNorm included."""

from dataclasses import dataclass

from cvtransfer.errors import ConfigError
from cvtransfer.options import STRATEGY, opt
from cvtransfer.strategies.base import STRATEGIES, Strategy


@dataclass
class PartialOptions:
    """How many layer groups stay frozen."""

    freeze: int = opt(2, "partial: number of leading layer groups (stem first) kept frozen.", STRATEGY, 0)


@STRATEGIES.register("partial")
class PartialFineTuning(Strategy):
    """Freeze layer groups ``0 .. freeze-1``; the rest and the head train."""

    name = "partial"
    options = PartialOptions

    def setup(self) -> None:
        k = self.config.freeze
        if k > self.model.num_groups:
            raise ConfigError(
                f"--freeze {k} exceeds the {self.model.num_groups} layer groups of {self.config.backbone}"
            )
        self.model.set_frozen_groups(range(k), requires_grad=False)
