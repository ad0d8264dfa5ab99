"""Effective per-group learning rates under every schedule: discriminative ratios survive."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from cvtransfer.api import fit
from cvtransfer.config import Config
from cvtransfer.engine.history import read_history
from cvtransfer.engine.schedule import build_optimizer, build_scheduler, lr_factor, onecycle_momentum
from tests.conftest import tiny_config, write_class_images


class LRProbe(pl.Callback):
    """Records every group's LR as the optimizer sees it, before each step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        self.steps.append({g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups})


@pytest.mark.parametrize("scheduler", ["cosine", "step", "onecycle", "none"])
def test_layer_decay_ratios_hold_at_every_step(scheduler: str, split_dir: Path, tmp_path: Path) -> None:
    probe = LRProbe()
    fit(tiny_config(split_dir, tmp_path / "run", strategy="full", layer_decay=0.5, head_lr_mult=10.0, lr=1e-3,
                    scheduler=scheduler, epochs=3, warmup_epochs=1.0), callbacks=[probe])
    for step in probe.steps[1:]:
        head = step["head"]
        # tinycnn has 4 groups: group i gets lr * 0.5 ** (4 - i); the head gets 10 * lr.
        for i in range(4):
            assert step[f"group{i}"] == pytest.approx(head / 10 * 0.5 ** (4 - i), rel=1e-6)
            assert step[f"group{i}.no_decay"] == pytest.approx(step[f"group{i}"], rel=1e-6)
    first_head = probe.steps[0]["head"]
    if scheduler == "onecycle":
        assert first_head < 1e-3  # starts low, rises to the peak
        assert max(s["head"] for s in probe.steps) == pytest.approx(1e-2, rel=0.05)
    else:
        assert first_head == pytest.approx(1e-2 * lr_factor(0, 9, 3, scheduler), rel=1e-6)  # warm-up


def test_lr_factor_shapes() -> None:
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, 100, 0, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    assert [lr_factor(s, 90, 0, "step") for s in (0, 30, 60)] == pytest.approx([1.0, 0.1, 0.01])
    assert lr_factor(50, 100, 0, "none") == 1.0


@pytest.mark.parametrize("kind", ["cosine", "step", "onecycle", "inv", "none"])
@pytest.mark.parametrize("total", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("warmup_epochs", [0.0, 1.0])
def test_every_schedule_runs_any_number_of_steps(kind: str, total: int, warmup_epochs: float) -> None:
    config = Config(scheduler=kind, optimizer="sgd", momentum=0.9, epochs=4, warmup_epochs=warmup_epochs,
                    lr=0.1)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer(config, [{"params": [param], "lr": 0.1, "name": "head"}])
    scheduler = build_scheduler(config, optimizer, total)
    lrs = []
    for _ in range(total):  # as Lightning does: the LR of each step, then one scheduler step
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert all(0 < lr <= 0.1 * (1 + 1e-9) for lr in lrs), lrs
    if kind == "onecycle":
        assert 0.85 <= optimizer.param_groups[0]["momentum"] <= 0.95
    restored = build_scheduler(config, optimizer, total)
    restored.load_state_dict(scheduler.state_dict())  # what --resume does
    assert restored.last_epoch == scheduler.last_epoch


def test_onecycle_trains_a_short_run(tmp_path: Path) -> None:
    # 60 images, batch 32: 48 training images give one step per epoch, four in all.
    data = tmp_path / "data"
    write_class_images(data, {"a": 20, "b": 20, "c": 20})
    run = fit(tiny_config(data, tmp_path / "run", scheduler="onecycle", epochs=4, batch_size=32))
    history = read_history(run.path / "history.csv")
    assert len(history) == 4 and (run.path / "model.safetensors").is_file()
    assert history[0]["lr"] != history[-1]["lr"]


def _onecycle_steps(scheduler: torch.optim.lr_scheduler.LRScheduler, optimizer: torch.optim.Optimizer,
                    steps: int) -> list[tuple[float, float]]:
    """(lr, momentum) of ``steps`` optimizer steps, each followed by a scheduler step (as Lightning does)."""
    seen = []
    for _ in range(steps):
        seen.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["momentum"]))
        optimizer.step()
        scheduler.step()
    return seen


def _sgd(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9, nesterov=True)


def _torch_onecycle(total: int, warmup: int) -> list[tuple[float, float]] | None:
    """What torch's OneCycleLR gives (the previous onecycle, warm-up cut to 0.9 of the run), or None
    where it divides by zero."""
    optimizer = _sgd()
    pct_start = min(0.9, warmup / total) if warmup else 0.25
    try:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total,
                                                        pct_start=pct_start, cycle_momentum=True)
        return _onecycle_steps(scheduler, optimizer, total)
    except ZeroDivisionError:
        return None


def _our_onecycle(total: int, warmup: int) -> list[tuple[float, float]]:
    # warmup_epochs * (total // epochs) steps of warm-up
    epochs = total // warmup if warmup else 1
    config = Config(scheduler="onecycle", optimizer="sgd", momentum=0.9, lr=0.1, epochs=epochs,
                    warmup_epochs=1.0 if warmup else 0.0)
    optimizer = _sgd()
    scheduler = build_scheduler(config, optimizer, total)
    assert scheduler.warmup == warmup
    return _onecycle_steps(scheduler, optimizer, total)


@pytest.mark.parametrize("warmup_share", [0, 5])
def test_onecycle_is_torchs_onecycle(warmup_share: int) -> None:
    compared = 0
    for total in range(5, 201):
        warmup = total // warmup_share if warmup_share else 0
        if warmup and total % warmup:
            continue  # a warm-up of whole epochs: total is a multiple of the steps per epoch
        reference = _torch_onecycle(total, warmup)
        if reference is None:
            continue
        ours = _our_onecycle(total, warmup)
        for (lr, momentum), (torch_lr, torch_momentum) in zip(ours, reference, strict=True):
            assert lr == pytest.approx(torch_lr, rel=1e-12, abs=0), total
            assert momentum == pytest.approx(torch_momentum, rel=1e-12, abs=0), total
        compared += 1
    assert compared > 30


@pytest.mark.parametrize("warmup", [0, 1, 2])
def test_onecycle_where_torch_divides_by_zero(warmup: int) -> None:
    divided_by_zero = 0
    for total in range(max(1, warmup), 41):
        optimizer = _sgd()
        config = Config(scheduler="onecycle", optimizer="sgd", momentum=0.9, lr=0.1, epochs=total,
                        warmup_epochs=float(warmup))
        ours = _onecycle_steps(build_scheduler(config, optimizer, total), optimizer, total)
        reference = _torch_onecycle(total, warmup)
        if reference is not None:
            assert [lr for lr, _ in ours] == pytest.approx([lr for lr, _ in reference], rel=1e-12, abs=0)
            continue
        divided_by_zero += 1  # e.g. 4 steps at pct_start 0.25, or a warm-up of one step
        lrs = [lr for lr, _ in ours]
        assert all(math.isfinite(lr) and 0 < lr <= 0.1 * (1 + 1e-12) for lr in lrs), lrs
        assert lrs[0] == pytest.approx(0.1 / 25, rel=1e-12)
        assert lrs[-1] == pytest.approx(0.1 / 25e4, rel=1e-12)
        assert all(0.85 <= m <= 0.95 for _, m in ours)
    assert divided_by_zero or warmup == 2  # without a warm-up: 4 steps; a one-step warm-up: most totals


def test_onecycle_four_steps_rise_then_anneal() -> None:
    # torch's OneCycleLR divides by zero here (0.25 * 4 - 1 == 0): the first step is the start.
    lrs = [lr_factor(step, 4, 0, "onecycle") for step in range(4)]
    assert lrs[0] == pytest.approx(1 / 25) and lrs[1] > lrs[2] > lrs[3] == pytest.approx(1 / 25e4)
    assert onecycle_momentum(0, 4, 0) == pytest.approx(0.95)


def test_resuming_a_torch_onecycle_state_keeps_the_learning_rates() -> None:
    """A checkpoint of the previous onecycle (torch's OneCycleLR) resumes where it was, at the full LRs."""
    total, done = 100, 30
    old_optimizer = _sgd()
    old = torch.optim.lr_scheduler.OneCycleLR(old_optimizer, max_lr=0.1, total_steps=total, pct_start=0.25)
    _onecycle_steps(old, old_optimizer, done)
    old_state = old.state_dict()
    assert old_state["base_lrs"] == [pytest.approx(0.1 / 25)]  # what the old checkpoint holds
    expected = _onecycle_steps(old, old_optimizer, total - done)

    # --resume: Lightning builds the optimizer and scheduler from the config, then loads both states.
    optimizer = _sgd()
    config = Config(scheduler="onecycle", optimizer="sgd", momentum=0.9, lr=0.1, epochs=1)
    scheduler = build_scheduler(config, optimizer, total)
    resumed_optimizer = _sgd()
    resumed = torch.optim.lr_scheduler.OneCycleLR(resumed_optimizer, max_lr=0.1, total_steps=total,
                                                  pct_start=0.25)
    _onecycle_steps(resumed, resumed_optimizer, done)
    optimizer.load_state_dict(resumed_optimizer.state_dict())
    scheduler.load_state_dict(old_state)
    assert scheduler.last_epoch == done and scheduler.base_lrs == [0.1]
    got = _onecycle_steps(scheduler, optimizer, total - done)
    assert [lr for lr, _ in got] == pytest.approx([lr for lr, _ in expected], rel=1e-12, abs=0)
    assert [m for _, m in got] == pytest.approx([m for _, m in expected], rel=1e-12, abs=0)
