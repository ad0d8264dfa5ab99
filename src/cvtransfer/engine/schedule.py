"""Optimizers and learning-rate schedules, stepped once per optimizer step.

Every schedule multiplies each group's own ``lr`` by the same factor, so discriminative LRs keep
their ratios (timm's ``lr_scale`` is never used: only timm's schedulers read it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim import SGD, Adam, AdamW, Optimizer, RMSprop
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

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


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the base LR at ``step``: linear warm-up, then cosine, step (x0.1 per third), inv or flat.

    inv is (1 + 10 p)^-0.75 at progress p (Ganin et al. 2016; Long et al.'s DA papers and TLlib).
    """
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


def build_scheduler(config: Config, optimizer: Optimizer, total_steps: int) -> LRScheduler:
    """The LR schedule for ``total_steps`` optimizer steps."""
    steps_per_epoch = max(1, total_steps // config.epochs)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if config.scheduler == "onecycle":
        pct_start = warmup / total_steps if warmup else 0.25
        return OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=max(2, total_steps),
            pct_start=min(0.9, pct_start),
            cycle_momentum=config.optimizer in ("sgd", "rmsprop"),
        )
    return LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup, config.scheduler))


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The effective LR of each named parameter group right now."""
    return {group.get("name", str(i)): group["lr"] for i, group in enumerate(optimizer.param_groups)}
