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


ONECYCLE_DIV = 25.0  # torch's OneCycleLR defaults: the LR starts at max / 25 and ends at max / 25e4
ONECYCLE_FINAL_DIV = 1e4
ONECYCLE_START = 1 / ONECYCLE_DIV
ONECYCLE_END = ONECYCLE_START / ONECYCLE_FINAL_DIV
ONECYCLE_MOMENTUM = (0.95, 0.85)  # momentum at the LR's lowest and at its peak, cycled inversely to the LR
ONECYCLE_PCT_START = 0.25  # the rise's share of the steps without a warm-up
ONECYCLE_MAX_PCT = 0.9  # a warm-up longer than this share of the run is cut to it


def _anneal(start: float, end: float, pct: float) -> float:
    """Cosine from ``start`` (pct 0) to ``end`` (pct 1), written as torch's OneCycleLR writes it."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def onecycle_phase(step: int, total: int, warmup: int) -> tuple[int, float]:
    """(phase, pct) at ``step`` of ``total``: phase 0 rises to the peak, phase 1 anneals, pct from 0 to 1.

    Exactly torch.optim.lr_scheduler.OneCycleLR's two phases, ending at steps
    ``float(pct_start * total) - 1`` and ``total - 1`` with ``pct_start = warmup / total`` (at most 0.9)
    or 0.25 without a warm-up. Where torch divides by zero (a phase of no length, e.g. 4 steps at
    pct_start 0.25), a phase of no length is at its start (the rise) or its end (the anneal): the LR
    still starts at max / 25 and ends at max / 25e4. Steps past ``total`` stay at ``total``.
    """
    pct_start = min(ONECYCLE_MAX_PCT, warmup / total) if warmup else ONECYCLE_PCT_START
    ends = (float(pct_start * total) - 1, total - 1)
    step = min(step, total)
    start_step = 0.0
    for phase, end_step in enumerate(ends):
        if step <= end_step or phase == len(ends) - 1:
            if end_step == start_step:
                return phase, float(phase)
            return phase, (step - start_step) / (end_step - start_step)
        start_step = end_step
    raise AssertionError("unreachable")


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the base LR at ``step`` of ``total``, for any ``total`` >= 1.

    Linear warm-up over ``warmup`` steps, then cosine, step (x0.1 per third), inv or flat; onecycle is
    torch's OneCycleLR (:func:`onecycle_phase`): cosine from max/25 up to max over the warm-up (default a
    quarter of the steps), then down to max/25e4. inv is (1 + 10 p)^-0.75 at progress p (Ganin et al.
    2016; Long et al.'s DA papers and TLlib).
    """
    if kind == "onecycle":
        phase, pct = onecycle_phase(step, total, warmup)
        return _anneal(ONECYCLE_START, 1.0, pct) if phase == 0 else _anneal(1.0, ONECYCLE_END, pct)
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
    """The one-cycle momentum at ``step``, as torch's OneCycleLR cycles it: high while the LR is low,
    lowest at the LR's peak."""
    high, low = ONECYCLE_MOMENTUM
    phase, pct = onecycle_phase(step, total, warmup)
    return _anneal(high, low, pct) if phase == 0 else _anneal(low, high, pct)


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

    def step(self, epoch: int | None = None) -> None:
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
        so a resumed run with more ``epochs`` stretches its schedule.

        A torch OneCycleLR's state (onecycle checkpoints written before this schedule replaced it) gives
        the position only: its ``base_lrs`` are max / 25, the LRs this schedule's factors multiply are max.
        """
        if "_schedule_phases" in state_dict:
            position = ("last_epoch", "_step_count", "_last_lr")
            self.__dict__.update({k: state_dict[k] for k in position if k in state_dict})
            return
        keep = ("total", "warmup", "kind", "cycle_momentum", "lr_lambdas")
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in keep})


def build_scheduler(config: Config, optimizer: Optimizer, total_steps: int) -> LRScheduler:
    """The LR schedule for ``total_steps`` optimizer steps (any number >= 1; fewer counts as 1)."""
    total = max(1, int(total_steps))
    steps_per_epoch = max(1, total // max(1, config.epochs))
    warmup = round(config.warmup_epochs * steps_per_epoch)
    cycle = config.scheduler == "onecycle" and config.optimizer in ("sgd", "rmsprop") and config.momentum > 0
    return StepSchedule(optimizer, total, warmup, config.scheduler, cycle_momentum=cycle)


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The effective LR of each named parameter group right now."""
    return {group.get("name", str(i)): group["lr"] for i, group in enumerate(optimizer.param_groups)}
