"""Optimizers and learning-rate schedules, stepped once per optimizer step.

Every schedule multiplies each group's own ``lr`` by the same factor, so discriminative LRs keep
their ratios (timm's ``lr_scale`` is never used: only timm's schedulers read it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim import SGD, Adam, AdamW, Optimizer, RMSprop
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from cvtransfer.config import Config


def build_optimizer(config: Config, param_groups: list[dict[str, Any]]) -> Optimizer:
    """The optimizer named by ``--optimizer`` over ``param_groups`` (each carrying its lr and decay)."""
    if config.optimizer == "sgd":
        return SGD(param_groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    if config.optimizer == "rmsprop":
        return RMSprop(param_groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adam":
        return Adam(param_groups, lr=config.lr)
    return AdamW(param_groups, lr=config.lr)


ONECYCLE_START = 1 / 25  # the LR starts at max / 25 and ends at max / 25e4 (torch's OneCycleLR defaults)
ONECYCLE_END = ONECYCLE_START / 1e4
ONECYCLE_MOMENTUM = (0.95, 0.85)  # momentum at the LR's lowest and at its peak, cycled inversely to the LR


def _cosine(start: float, end: float, t: float) -> float:
    """Cosine interpolation from ``start`` (t = 0) to ``end`` (t = 1)."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, t))))


def onecycle_position(step: int, total: int, warmup: int) -> float:
    """Where ``step`` is in the one cycle: 0 at the start, 1 at the peak, 2 at the last step.

    The rise lasts ``warmup`` steps (default a quarter of the run); any ``total`` >= 1 works: one step
    is spent at the peak, two go start -> peak.
    """
    if total <= 1:
        return 1.0
    rise = min(total - 1, max(1, warmup or round(0.25 * total)))
    if step <= rise:
        return step / rise
    return 1.0 + (step - rise) / max(1, total - 1 - rise)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the base LR at ``step`` of ``total``, for any ``total`` >= 1.

    Linear warm-up over ``warmup`` steps, then cosine, step (x0.1 per third), inv or flat; onecycle
    rises (cosine) from max/25 to max over the warm-up (default a quarter of the steps), then anneals to
    max/25e4. inv is (1 + 10 p)^-0.75 at progress p (Ganin et al. 2016; Long et al.'s DA papers and TLlib).
    """
    if kind == "onecycle":
        position = onecycle_position(step, total, warmup)
        if position <= 1.0:
            return _cosine(ONECYCLE_START, 1.0, position)
        return _cosine(1.0, ONECYCLE_END, position - 1.0)
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "step":
        return 0.1 ** min(2, int(progress * 3))
    if kind == "inv":
        return (1.0 + 10.0 * progress) ** -0.75
    return 1.0


def onecycle_momentum(step: int, total: int, warmup: int) -> float:
    """The one-cycle momentum at ``step``: high while the LR is low, lowest at the LR's peak."""
    high, low = ONECYCLE_MOMENTUM
    position = onecycle_position(step, total, warmup)
    return _cosine(high, low, position) if position <= 1.0 else _cosine(low, high, position - 1.0)


class StepSchedule(LambdaLR):
    """Every group's LR times :func:`lr_factor`; with ``cycle_momentum`` (onecycle, SGD or RMSprop)
    the groups' momentum follows :func:`onecycle_momentum`."""

    def __init__(self, optimizer: Optimizer, total: int, warmup: int, kind: str,
                 cycle_momentum: bool = False) -> None:
        self.total, self.warmup, self.kind = total, warmup, kind
        self.cycle_momentum = cycle_momentum and kind == "onecycle"
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        return lr_factor(step, self.total, self.warmup, self.kind)

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        super().step(epoch)
        if self.cycle_momentum:
            momentum = onecycle_momentum(self.last_epoch, self.total, self.warmup)
            for group in self.optimizer.param_groups:
                group["momentum"] = momentum

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.pop("lr_lambdas", None)  # a bound method: rebuilt from the config, never pickled
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the position (step count, base LRs); the shape stays the one built from the config,
        so a resumed run with more ``epochs`` stretches its schedule."""
        keep = ("total", "warmup", "kind", "cycle_momentum", "lr_lambdas")
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in keep})


def build_scheduler(config: Config, optimizer: Optimizer, total_steps: int) -> LRScheduler:
    """The LR schedule for ``total_steps`` optimizer steps (any number >= 1; fewer counts as 1)."""
    total = max(1, int(total_steps))
    steps_per_epoch = max(1, total // max(1, config.epochs))
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    cycle = config.scheduler == "onecycle" and config.optimizer in ("sgd", "rmsprop") and config.momentum > 0
    return StepSchedule(optimizer, total, warmup, config.scheduler, cycle_momentum=cycle)


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The effective LR of each named parameter group right now."""
    return {group.get("name", str(i)): group["lr"] for i, group in enumerate(optimizer.param_groups)}
